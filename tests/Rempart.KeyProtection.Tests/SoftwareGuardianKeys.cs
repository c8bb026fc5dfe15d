using System.Security.Cryptography;

namespace Rempart.KeyProtection.Tests;

/// <summary>
/// A Guardian's keys in memory, for tests only: P-384 encryption keys with a lifecycle and an ES256
/// signing key, behind <see cref="IGuardianKeyOperations"/> like a real key provider. Lets a test
/// play the Guardian: publish metadata, unwrap key protectors, rotate and retire keys.
/// </summary>
public sealed class SoftwareGuardianKeys : IGuardianKeyOperations, IDisposable
{
    private readonly Dictionary<string, ECDiffieHellman> _private = new(StringComparer.Ordinal);
    private readonly List<GuardianKeyInfo> _keys = [];
    private readonly ECDsa _signing = ECDsa.Create(ECCurve.NamedCurves.nistP256);

    public SoftwareGuardianKeys(string guardianId = "guardian-1")
    {
        GuardianId = guardianId;
        Rotate();
    }

    public string GuardianId { get; }

    public IReadOnlyList<GuardianKeyInfo> Keys => _keys;

    public GuardianKeyInfo Active => _keys.Single(k => k.Status == GuardianKeyStatus.Active);

    public byte[] SigningSpki => _signing.ExportSubjectPublicKeyInfo();

    /// <summary>A new active key; the previous active key becomes retiring. Returns the new key.</summary>
    public GuardianKeyInfo Rotate()
    {
        for (int i = 0; i < _keys.Count; i++)
        {
            if (_keys[i].Status == GuardianKeyStatus.Active)
            {
                _keys[i] = _keys[i] with { Status = GuardianKeyStatus.Retiring };
            }
        }
        var key = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        var spki = key.ExportSubjectPublicKeyInfo();
        var info = new GuardianKeyInfo(KeyIds.Of(spki), spki, GuardianKeyStatus.Active, DateTimeOffset.UtcNow);
        _private[info.Kid] = key;
        _keys.Add(info);
        return info;
    }

    public void Retire(string kid)
    {
        int i = _keys.FindIndex(k => k.Kid == kid);
        _keys[i] = _keys[i] with { Status = GuardianKeyStatus.Retired };
    }

    /// <summary>The private key as PKCS#8 PEM, for the openssl cross-checks.</summary>
    public string PrivatePem(string kid) => _private[kid].ExportPkcs8PrivateKeyPem();

    public GuardianMetadata Metadata(string name = "Test Guardian", Uri? url = null) =>
        GuardianMetadata.Create(GuardianId, name, url ?? new Uri("https://guardian.example:8443"), _keys, SigningSpki, DateTimeOffset.UtcNow, d => SignEs256(d));

    public byte[] DeriveSharedSecret(string kid, ReadOnlySpan<byte> peerSubjectPublicKeyInfo)
    {
        var info = _keys.FirstOrDefault(k => k.Kid == kid);
        if (info is null || info.Status == GuardianKeyStatus.Retired)
        {
            throw new KeyProviderException("keys.unknown-kid", $"no usable key {kid}");
        }
        using var peer = ECDiffieHellman.Create();
        try
        {
            peer.ImportSubjectPublicKeyInfo(peerSubjectPublicKeyInfo, out _);
            return _private[kid].DeriveRawSecretAgreement(peer.PublicKey);
        }
        catch (CryptographicException e)
        {
            throw new KeyProviderException("keys.peer-key", "the peer key is not a P-384 point", e);
        }
    }

    public byte[] SignEs256(ReadOnlySpan<byte> data) =>
        _signing.SignData(data, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);

    public void Dispose()
    {
        foreach (var k in _private.Values)
        {
            k.Dispose();
        }
        _signing.Dispose();
    }
}

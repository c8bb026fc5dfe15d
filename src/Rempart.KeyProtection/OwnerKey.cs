using System.Security.Cryptography;

namespace Rempart.KeyProtection;

/// <summary>
/// The tenant's owner key: a NIST P-384 key-agreement key that every key protector is also wrapped
/// for, so the tenant can recover a VM's master key offline without any Guardian. At rest it is an
/// encrypted PKCS#8 PEM (RFC 5958 EncryptedPrivateKeyInfo, PBES2: PBKDF2-HMAC-SHA256 with
/// <see cref="Pbkdf2Iterations"/> iterations, AES-256-CBC).
/// </summary>
public sealed class OwnerKey : IDisposable
{
    /// <summary>OWASP's 2023 figure for PBKDF2-HMAC-SHA256.</summary>
    public const int Pbkdf2Iterations = 600_000;

    private readonly ECDiffieHellman _key;

    private OwnerKey(ECDiffieHellman key)
    {
        _key = key;
        PublicKey = new OwnerPublicKey(key.ExportSubjectPublicKeyInfo());
    }

    public OwnerPublicKey PublicKey { get; }

    public static OwnerKey Generate() => new(ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384));

    /// <summary>Reads an owner key written by <see cref="ToEncryptedPem"/>. Throws <see cref="OwnerKeyException"/>.</summary>
    public static OwnerKey FromEncryptedPem(string pem, ReadOnlySpan<char> passphrase)
    {
        if (!PemEncoding.TryFind(pem, out var fields) || pem[fields.Label] != "ENCRYPTED PRIVATE KEY")
        {
            throw new OwnerKeyException("owner.key.format", "not an owner key (expected an ENCRYPTED PRIVATE KEY PEM block)");
        }
        var key = ECDiffieHellman.Create();
        try
        {
            key.ImportFromEncryptedPem(pem, passphrase);
        }
        catch (CryptographicException)
        {
            key.Dispose();
            throw new OwnerKeyException("owner.key.decrypt", "cannot decrypt the owner key: wrong passphrase or damaged file");
        }
        catch (ArgumentException)
        {
            key.Dispose();
            throw new OwnerKeyException("owner.key.format", "not an owner key (unreadable PEM)");
        }
        if (!EcKeys.IsP384(key.ExportSubjectPublicKeyInfo()))
        {
            key.Dispose();
            throw new OwnerKeyException("owner.key.format", "the owner key is not a NIST P-384 key");
        }
        return new OwnerKey(key);
    }

    /// <summary>The private key as encrypted PKCS#8 PEM (PBKDF2-SHA256, <see cref="Pbkdf2Iterations"/>, AES-256-CBC).</summary>
    public string ToEncryptedPem(ReadOnlySpan<char> passphrase)
    {
        if (passphrase.IsEmpty)
        {
            throw new ArgumentException("an owner key needs a passphrase", nameof(passphrase));
        }
        return _key.ExportEncryptedPkcs8PrivateKeyPem(passphrase, new PbeParameters(PbeEncryptionAlgorithm.Aes256Cbc, HashAlgorithmName.SHA256, Pbkdf2Iterations));
    }

    /// <summary>The private-key step of ECDH-ES for the owner wrap: raw Z with a sender's ephemeral key.</summary>
    internal byte[] Agree(ReadOnlySpan<byte> ephemeralPublicKey)
    {
        using var peer = EcKeys.TryImportP384(ephemeralPublicKey)
            ?? throw new KeyProtectorException("kp.wrap.ephemeral-key", "the ephemeral key is not a P-384 public key");
        return _key.DeriveRawSecretAgreement(peer.PublicKey);
    }

    public void Dispose() => _key.Dispose();
}

/// <summary>The public half of an owner key: a P-384 SPKI, shared as PEM (<c>owner.pub</c>).</summary>
public sealed class OwnerPublicKey
{
    private readonly byte[] _spki;

    public OwnerPublicKey(ReadOnlySpan<byte> subjectPublicKeyInfo)
    {
        if (!EcKeys.IsP384(subjectPublicKeyInfo))
        {
            throw new OwnerKeyException("owner.public.format", "the owner public key is not a NIST P-384 SubjectPublicKeyInfo");
        }
        _spki = subjectPublicKeyInfo.ToArray();
        Kid = KeyIds.Of(_spki);
    }

    public ReadOnlySpan<byte> SubjectPublicKeyInfo => _spki;

    /// <summary><see cref="KeyIds.Of"/> of the SPKI; the owner wrap names it.</summary>
    public string Kid { get; }

    /// <summary>SHA-256 of the SPKI, hex.</summary>
    public string Fingerprint => KeyIds.Fingerprint(_spki);

    /// <summary>Reads <c>owner.pub</c> (a PUBLIC KEY PEM block). Throws <see cref="OwnerKeyException"/>.</summary>
    public static OwnerPublicKey FromPem(string pem)
    {
        if (!PemEncoding.TryFind(pem, out var fields) || pem[fields.Label] != "PUBLIC KEY")
        {
            throw new OwnerKeyException("owner.public.format", "not an owner public key (expected a PUBLIC KEY PEM block)");
        }
        var der = new byte[fields.DecodedDataLength];
        return Convert.TryFromBase64Chars(pem[fields.Base64Data], der, out int n) && n == der.Length
            ? new OwnerPublicKey(der)
            : throw new OwnerKeyException("owner.public.format", "the owner public key PEM is not valid base64");
    }

    public string ToPem() => PemEncoding.WriteString("PUBLIC KEY", _spki);
}

using System.Collections.Concurrent;
using System.Security.Cryptography;
using Rempart.KeyProtection;

namespace Rempart.Guardian.Keys;

/// <summary>
/// Keys in the Guardian's data folder, encrypted at rest with the operator's secret: each private
/// key is an encrypted PKCS#8 file (RFC 5958 EncryptedPrivateKeyInfo, PBES2 of RFC 8018:
/// PBKDF2-HMAC-SHA256 with 600,000 iterations and a random salt, AES-256-CBC) under
/// <c>DIR/keys/</c>, 0600, written atomically: <c>signing-key.p8</c> (P-256) and
/// <c>enc-&lt;kid&gt;.p8</c> (P-384), plus <c>file-keys.json</c> (public keys, status, times). A copy of
/// the folder without the secret reveals no private key; the format is standard, so
/// <c>openssl pkey -in F.p8</c> opens a file with the secret. Keys are decrypted once at start
/// (retired ones never) and held in memory only. A derivation goes through <see cref="OpenSslEcdh"/>
/// (the peer key checked once, on import) unless OpenSSL cannot be called directly in this process;
/// then through .NET's <c>DeriveRawSecretAgreement</c>, same Z, slower.
/// </summary>
public sealed class FileKeyProvider : KeyProviderBase
{
    /// <summary>Where the token-signing key lived before key providers; adopted at first start.</summary>
    public const string LegacySigningKeyFile = "token-signing-key.p8";

    private static readonly PbeParameters Pbe = new(PbeEncryptionAlgorithm.Aes256Cbc, HashAlgorithmName.SHA256, 600_000);

    private readonly string _keysDir;
    private readonly byte[] _secret;
    private readonly ECDsa _signing;
    private readonly byte[] _signingSpki;
    private readonly ConcurrentDictionary<string, PrivateKey> _keys = new(StringComparer.Ordinal);

    private FileKeyProvider(string keysDir, byte[] secret, ECDsa signing, TimeProvider time)
        : base(Path.Combine(keysDir, "file-keys.json"), "file", time)
    {
        _keysDir = keysDir;
        _secret = secret;
        _signing = signing;
        _signingSpki = signing.ExportSubjectPublicKeyInfo();
    }

    public override string Kind => "file";

    public override byte[] SigningPublicKey => (byte[])_signingSpki.Clone();

    /// <summary>Opens (or, at first start, creates) the keys of the data folder <paramref name="dataDir"/>.</summary>
    public static FileKeyProvider Open(string dataDir, ReadOnlySpan<byte> secret, TimeProvider? time = null)
    {
        if (secret.Length < 16)
        {
            throw new KeyProviderException("keys.secret.short", "the Guardian's key secret must be at least 16 bytes (REMPART_GUARDIAN_SECRET or --secret-file)");
        }
        var keysDir = Path.Combine(dataDir, "keys");
        AtomicFile.EnsurePrivateDirectory(keysDir);
        var secretCopy = secret.ToArray();
        var signing = OpenSigningKey(dataDir, keysDir, secretCopy);
        var provider = new FileKeyProvider(keysDir, secretCopy, signing, time ?? TimeProvider.System);
        try
        {
            provider.LoadEncryptionKeys();
            return provider;
        }
        catch
        {
            provider.Dispose();
            throw;
        }
    }

    private static ECDsa OpenSigningKey(string dataDir, string keysDir, byte[] secret)
    {
        var path = Path.Combine(keysDir, "signing-key.p8");
        var legacy = Path.Combine(dataDir, LegacySigningKeyFile);
        if (File.Exists(path))
        {
            return Decrypt<ECDsa>(path, secret, ECDsa.Create, firstKey: true);
        }
        if (File.Exists(legacy))
        {
            // A data folder from before key providers: keep its signing key (relying parties trust
            // its kid). Same encrypted bytes, moved under keys/; the old file goes only once the
            // new one is on disk.
            var key = Decrypt<ECDsa>(legacy, secret, ECDsa.Create, firstKey: true);
            AtomicFile.Write(path, File.ReadAllBytes(legacy));
            File.Delete(legacy);
            return key;
        }
        var created = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        AtomicFile.Write(path, created.ExportEncryptedPkcs8PrivateKey(secret, Pbe));
        return created;
    }

    private void LoadEncryptionKeys()
    {
        var registry = LoadRegistry();
        var present = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (var file in Directory.GetFiles(_keysDir, "enc-*.p8"))
        {
            var kid = Path.GetFileNameWithoutExtension(file)["enc-".Length..];
            var entry = registry?.EncryptionKeys.FirstOrDefault(e => e.Kid == kid);
            if (entry?.Status == GuardianKeyStatus.Retired)
            {
                continue; // never decrypted again
            }
            var key = Decrypt(file, _secret, () => new ECDiffieHellmanOpenSsl(), firstKey: false);
            var spki = key.ExportSubjectPublicKeyInfo();
            if (KeyRegistry.KidOf(spki) != kid || (entry is not null && !spki.AsSpan().SequenceEqual(entry.SpkiBytes)))
            {
                key.Dispose();
                throw new KeyProviderException("keys.registry", $"{file} holds a different key than its name and the registry say: restore the folder from a backup");
            }
            _keys[kid] = new PrivateKey(key);
            present[kid] = spki;
        }
        Reconcile(registry, present, _keysDir);
    }

    private protected override byte[] CreateEncryptionKey()
    {
        var key = new ECDiffieHellmanOpenSsl(ECCurve.NamedCurves.nistP384);
        var spki = key.ExportSubjectPublicKeyInfo();
        var kid = KeyRegistry.KidOf(spki);
        // The key file is on disk before the registry names it: a crash in between leaves a file
        // that the next start adopts, never a registry entry without its key.
        AtomicFile.Write(Path.Combine(_keysDir, $"enc-{kid}.p8"), key.ExportEncryptedPkcs8PrivateKey(_secret, Pbe));
        _keys[kid] = new PrivateKey(key);
        return spki;
    }

    private protected override byte[] Agree(string kid, PeerKey peer)
    {
        if (!_keys.TryGetValue(kid, out var key))
        {
            throw new KeyProviderException("keys.unknown-kid", $"no private key {kid} in {_keysDir}");
        }
        return OpenSslEcdh.Unavailable is null
            ? OpenSslEcdh.Derive(key.Handle, peer)
            : key.Key.DeriveRawSecretAgreement(peer.PublicKey);
    }

    public override byte[] SignEs256(ReadOnlySpan<byte> data) =>
        _signing.SignData(data, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);

    // Not disposed here: a derivation that passed the status check may still be using it; the
    // finalizer frees it once nothing does.
    private protected override void OnRetired(string kid) => _keys.TryRemove(kid, out _);

    /// <summary>Tests only: the private scalars (d) of every key held in memory, to look for them where they must not be.</summary>
    internal IReadOnlyDictionary<string, byte[]> ExportPrivateScalars()
    {
        var result = _keys.ToDictionary(k => k.Key, k => k.Value.Key.ExportParameters(true).D!);
        result[SigningKid] = _signing.ExportParameters(true).D!;
        return result;
    }

    /// <summary>A private key and its own reference to the EVP_PKEY, taken once, for <see cref="OpenSslEcdh"/>.</summary>
    private sealed class PrivateKey(ECDiffieHellmanOpenSsl key)
    {
        public ECDiffieHellmanOpenSsl Key { get; } = key;

        public SafeEvpPKeyHandle Handle { get; } = key.DuplicateKeyHandle();
    }

    private static T Decrypt<T>(string path, byte[] secret, Func<T> create, bool firstKey)
        where T : AsymmetricAlgorithm
    {
        var key = create();
        try
        {
            key.ImportEncryptedPkcs8PrivateKey(secret, File.ReadAllBytes(path), out _);
            return key;
        }
        catch (CryptographicException e)
        {
            key.Dispose();
            throw firstKey
                ? new KeyProviderException("keys.secret.wrong",
                    $"cannot decrypt {path} with the key secret given: it is not this Guardian's secret (REMPART_GUARDIAN_SECRET or --secret-file), or the file is damaged", e)
                : new KeyProviderException("keys.file.unreadable",
                    $"cannot decrypt {path}: the file is damaged or was encrypted with another secret; restore it from a backup", e);
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (var k in _keys.Values)
            {
                k.Handle.Dispose();
                k.Key.Dispose();
            }
            _keys.Clear();
            _signing.Dispose();
            CryptographicOperations.ZeroMemory(_secret);
        }
    }
}

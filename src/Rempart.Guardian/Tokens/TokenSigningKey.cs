using System.Buffers.Text;
using System.Security.Cryptography;

namespace Rempart.Guardian.Tokens;

/// <summary>
/// The ES256 key that signs health tokens. At rest it is an encrypted PKCS#8 file
/// (PBES2: PBKDF2-HMAC-SHA256, 600,000 iterations, AES-256-CBC) keyed by the operator's secret;
/// it is never written in clear. (The key-provider issue adds PKCS#11 and TPM sealing.)
/// </summary>
public sealed class TokenSigningKey : IDisposable
{
    private static readonly PbeParameters Pbe = new(PbeEncryptionAlgorithm.Aes256Cbc, HashAlgorithmName.SHA256, 600_000);

    private TokenSigningKey(ECDsa key)
    {
        Key = key;
        var spki = key.ExportSubjectPublicKeyInfo();
        KeyId = Base64Url.EncodeToString(SHA256.HashData(spki))[..22];
    }

    public ECDsa Key { get; }

    public string KeyId { get; }

    /// <summary>Loads the key from <paramref name="path"/>, creating it (0600) on first start.</summary>
    public static TokenSigningKey LoadOrCreate(string path, ReadOnlySpan<byte> secret)
    {
        if (secret.Length < 16)
        {
            throw new InvalidOperationException("the Guardian's key secret must be at least 16 bytes");
        }
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        if (File.Exists(path))
        {
            try
            {
                key.ImportEncryptedPkcs8PrivateKey(secret, File.ReadAllBytes(path), out _);
            }
            catch (CryptographicException)
            {
                key.Dispose();
                throw new InvalidOperationException($"cannot decrypt {path}: wrong key secret, or the file is damaged");
            }
            return new TokenSigningKey(key);
        }
        var encrypted = key.ExportEncryptedPkcs8PrivateKey(secret, Pbe);
        using (var f = new FileStream(path, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite }))
        {
            f.Write(encrypted);
        }
        return new TokenSigningKey(key);
    }

    public void Dispose() => Key.Dispose();
}

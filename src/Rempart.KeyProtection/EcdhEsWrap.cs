using System.Security.Cryptography;

namespace Rempart.KeyProtection;

/// <summary>
/// The recipient's private-key step of ECDH: given the sender's ephemeral public key (SPKI), return
/// the raw shared secret Z (the x-coordinate, 48 bytes for P-384). A software key for the owner,
/// <see cref="IGuardianKeyOperations.DeriveSharedSecret"/> (possibly inside an HSM) for a Guardian.
/// </summary>
internal delegate byte[] KeyAgreement(ReadOnlySpan<byte> ephemeralPublicKey);

/// <summary>
/// ECDH-ES key wrapping of the VM master key, one implementation for owner and Guardian recipients
/// (docs/key-protector.md, "Wrap scheme"):
/// <list type="number">
/// <item>the sender makes an ephemeral P-384 key pair and computes Z = ECDH(ephemeral, recipient) (SEC 1 §3.3.1, x-coordinate);</item>
/// <item>KEK = HKDF-SHA-384(IKM = Z, salt = empty, info = canonical("rempart/kp/v1/wrap", alg, kid, epk, headerDigest), L = 32) (RFC 5869);</item>
/// <item>(ct, tag) = AES-256-GCM(KEK, nonce = 12 random bytes, plaintext = VMK, AAD = headerDigest) (SP 800-38D).</item>
/// </list>
/// HKDF-SHA-384 rather than -256: P-384 is the 192-bit-security curve and SP 800-56C / CNSA pair it
/// with SHA-384; the 48-byte Z goes through a 48-byte extract without loss.
/// Z and the KEK are wiped as soon as they are used.
/// </summary>
public static class EcdhEsWrap
{
    /// <summary>Algorithm id, written in every wrap and bound into the KDF info.</summary>
    public const string Algorithm = "ECDH-ES-P384+HKDF-SHA384+A256GCM";

    public const int NonceLength = 12;
    public const int TagLength = 16;
    public const int SharedSecretLength = 48;
    private const string InfoLabel = "rempart/kp/v1/wrap";

    /// <summary>Wraps <paramref name="vmk"/> for the P-384 key <paramref name="recipientSpki"/>, bound to the key protector header digest.</summary>
    internal static KeyWrap Seal(ReadOnlySpan<byte> vmk, ReadOnlySpan<byte> recipientSpki, WrapRecipient recipient, string? guardianId, ReadOnlySpan<byte> headerDigest)
    {
        using var recipientKey = EcKeys.TryImportP384(recipientSpki)
            ?? throw new ArgumentException("the recipient key is not a valid NIST P-384 public key (SPKI)", nameof(recipientSpki));
        string kid = KeyIds.Of(recipientSpki);
        using var ephemeral = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        byte[] epk = ephemeral.ExportSubjectPublicKeyInfo();
        byte[] z = ephemeral.DeriveRawSecretAgreement(recipientKey.PublicKey);
        byte[] kek = new byte[32];
        try
        {
            DeriveKek(z, kid, epk, headerDigest, kek);
            var nonce = RandomNumberGenerator.GetBytes(NonceLength);
            var ct = new byte[vmk.Length];
            var tag = new byte[TagLength];
            using var gcm = new AesGcm(kek, TagLength);
            gcm.Encrypt(nonce, vmk, ct, tag, headerDigest);
            return new KeyWrap(recipient, guardianId, kid, epk, nonce, ct, tag);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(z);
            CryptographicOperations.ZeroMemory(kek);
        }
    }

    /// <summary>
    /// Unwraps: Z from the recipient's private-key step, the KEK, then AES-GCM decryption whose tag
    /// check (constant time) fails with <c>kp.wrap.tag</c> when any byte of the wrap, the header
    /// digest or the key differs. The caller owns (and wipes) the returned key.
    /// </summary>
    internal static byte[] Open(KeyWrap wrap, ReadOnlySpan<byte> headerDigest, KeyAgreement agree)
    {
        byte[] z = agree(wrap.EphemeralPublicKey);
        byte[] kek = new byte[32];
        byte[] vmk = new byte[wrap.Ciphertext.Length];
        try
        {
            if (z.Length != SharedSecretLength)
            {
                throw new KeyProtectorException("kp.wrap.agreement", $"the key agreement for {wrap.Kid} returned {z.Length} bytes, not {SharedSecretLength}");
            }
            DeriveKek(z, wrap.Kid, wrap.EphemeralPublicKey, headerDigest, kek);
            using var gcm = new AesGcm(kek, TagLength);
            gcm.Decrypt(wrap.Nonce, wrap.Ciphertext, wrap.Tag, vmk, headerDigest);
            return vmk;
        }
        catch (AuthenticationTagMismatchException)
        {
            CryptographicOperations.ZeroMemory(vmk);
            throw new KeyProtectorException("kp.wrap.tag", $"the wrap for key {wrap.Kid} does not authenticate: the key protector was altered, or was not made for this key");
        }
        catch
        {
            CryptographicOperations.ZeroMemory(vmk);
            throw;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(z);
            CryptographicOperations.ZeroMemory(kek);
        }
    }

    /// <summary>The HKDF info of a wrap (exposed for the cross-check tests and the documentation).</summary>
    internal static byte[] KdfInfo(string kid, ReadOnlySpan<byte> ephemeralPublicKey, ReadOnlySpan<byte> headerDigest) =>
        new Canonical().Text(InfoLabel).Text(Algorithm).Text(kid).Bytes(ephemeralPublicKey).Bytes(headerDigest).ToArray();

    internal static void DeriveKek(ReadOnlySpan<byte> z, string kid, ReadOnlySpan<byte> ephemeralPublicKey, ReadOnlySpan<byte> headerDigest, Span<byte> kek) =>
        HKDF.DeriveKey(HashAlgorithmName.SHA384, z, kek, salt: [], info: KdfInfo(kid, ephemeralPublicKey, headerDigest));
}

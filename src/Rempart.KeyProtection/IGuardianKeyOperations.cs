namespace Rempart.KeyProtection;

/// <summary>
/// The private-key primitives a Guardian key provider performs (inside a PKCS#11 token, or with a
/// key decrypted from the Guardian's data folder). Everything around them — KDF, AEAD, formats —
/// lives in this library, so one scheme serves every provider and the tenant-side tooling.
/// </summary>
public interface IGuardianKeyOperations
{
    /// <summary>
    /// ECDH on the Guardian encryption key <paramref name="kid"/> (NIST P-384) with a peer public
    /// key (SubjectPublicKeyInfo, DER): returns the shared secret Z (the x-coordinate, 48 bytes).
    /// The caller wipes Z after use. Throws <see cref="KeyProviderException"/> for an unknown or
    /// retired key id, or a point not on the curve.
    /// </summary>
    byte[] DeriveSharedSecret(string kid, ReadOnlySpan<byte> peerSubjectPublicKeyInfo);

    /// <summary>ES256 signature (IEEE P1363 r||s, 64 bytes) by the Guardian's signing key over <paramref name="data"/>.</summary>
    byte[] SignEs256(ReadOnlySpan<byte> data);
}

/// <summary>A key provider could not perform an operation; the message names the key and what failed, never key material.</summary>
public sealed class KeyProviderException(string id, string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>Stable identifier, e.g. <c>keys.unknown-kid</c>, <c>keys.pkcs11.login</c>, <c>keys.secret.wrong</c>.</summary>
    public string Id { get; } = id;
}

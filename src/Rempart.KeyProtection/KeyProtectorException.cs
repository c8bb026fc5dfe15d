namespace Rempart.KeyProtection;

/// <summary>
/// A key protector failed a check: its integrity, a wrap's authentication tag, or no wrap for the
/// caller's key. <see cref="Id"/> is stable (documented in docs/key-protector.md) so a Guardian can
/// answer with it and a test can name it; the message never contains key material.
/// </summary>
public class KeyProtectorException(string id, string message) : Exception(message)
{
    /// <summary>
    /// <c>kp.format</c> (see <see cref="KeyProtectorFormatException"/>), <c>kp.integrity</c>,
    /// <c>kp.wrap.tag</c>, <c>kp.no-guardian-key</c>, <c>kp.guardian-key.retired</c>, <c>kp.owner.wrong-key</c>.
    /// </summary>
    public string Id { get; } = id;
}

/// <summary>
/// A serialized key protector is malformed: not JSON, unknown version, an unknown, missing or
/// duplicated field, bad base64url, a wrong length, a value out of range, or too large.
/// The one exception a parse throws (id <c>kp.format</c>); <see cref="Field"/> names the field.
/// </summary>
public sealed class KeyProtectorFormatException(string field, string message)
    : KeyProtectorException("kp.format", $"key protector: {field}: {message}")
{
    /// <summary>JSON path of the offending field, e.g. <c>guardians[1].nonce</c>; <c>$</c> for the document.</summary>
    public string Field { get; } = field;
}

/// <summary>
/// Guardian metadata could not be used: its signature does not verify (<c>metadata.signature</c>),
/// its fingerprint is not the one the tenant expected (<c>metadata.fingerprint</c>), or it is malformed
/// (<see cref="GuardianMetadataFormatException"/>, <c>metadata.format</c>).
/// </summary>
public class GuardianMetadataException(string id, string message) : Exception(message)
{
    public string Id { get; } = id;
}

/// <summary>Malformed Guardian metadata (id <c>metadata.format</c>); <see cref="Field"/> names the field.</summary>
public sealed class GuardianMetadataFormatException(string field, string message)
    : GuardianMetadataException("metadata.format", $"guardian metadata: {field}: {message}")
{
    public string Field { get; } = field;
}

/// <summary>
/// An owner key file could not be used: <c>owner.key.format</c> (not an encrypted PKCS#8 P-384 key),
/// <c>owner.key.decrypt</c> (wrong passphrase or damaged file), <c>owner.public.format</c>.
/// </summary>
public sealed class OwnerKeyException(string id, string message) : Exception(message)
{
    public string Id { get; } = id;
}

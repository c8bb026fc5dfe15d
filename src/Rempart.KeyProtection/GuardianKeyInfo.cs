namespace Rempart.KeyProtection;

/// <summary>Lifecycle of a Guardian encryption key: new key protectors use the active key; older keys
/// stay usable for unwrapping until retired (after every key protector was re-wrapped).</summary>
public enum GuardianKeyStatus
{
    Active,
    Retiring,
    Retired,
}

/// <summary>
/// Public description of one Guardian encryption key: a NIST P-384 key-agreement key (the wrapping
/// scheme is in docs/key-protector.md), identified by
/// <see cref="Kid"/> = base64url(SHA-256(SubjectPublicKeyInfo)) truncated to 22 characters.
/// </summary>
public sealed record GuardianKeyInfo(string Kid, byte[] SubjectPublicKeyInfo, GuardianKeyStatus Status, DateTimeOffset CreatedAt);

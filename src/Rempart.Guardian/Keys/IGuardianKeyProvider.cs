using Rempart.KeyProtection;

namespace Rempart.Guardian.Keys;

/// <summary>
/// Where the Guardian's private keys live and how they are used: the token-signing key (ES256,
/// P-256) and the encryption keys (P-384, key agreement) that wrap VM master keys in key
/// protectors. Private keys never leave the provider: callers get public keys, ECDH secrets and
/// signatures. Encryption keys rotate: <see cref="Rotate"/> makes a new active key for new key
/// protectors and keeps the previous ones usable for unwrapping (<see cref="GuardianKeyStatus.Retiring"/>)
/// until <see cref="Retire"/>, after every key protector was re-wrapped. The first keys are made at
/// first start. Safe for concurrent use.
/// </summary>
public interface IGuardianKeyProvider : IGuardianKeyOperations, IDisposable
{
    /// <summary><c>file</c> or <c>pkcs11</c>.</summary>
    string Kind { get; }

    /// <summary>The token-signing public key (SubjectPublicKeyInfo, DER, P-256).</summary>
    byte[] SigningPublicKey { get; }

    /// <summary>Key id of <see cref="SigningPublicKey"/> (the JWS <c>kid</c>).</summary>
    string SigningKid { get; }

    /// <summary>Every encryption key the provider knows, oldest first, with its status.</summary>
    IReadOnlyList<GuardianKeyInfo> EncryptionKeys { get; }

    /// <summary>The key new key protectors are made for.</summary>
    GuardianKeyInfo ActiveKey { get; }

    /// <summary>Makes a new active encryption key; the previous active key becomes retiring (still unwraps).</summary>
    GuardianKeyInfo Rotate();

    /// <summary>
    /// Retires a retiring key: it no longer unwraps anything (<c>keys.retired</c>). Refuses the active
    /// key (<c>keys.retire.active</c>: rotate first) and unknown ids (<c>keys.unknown-kid</c>).
    /// Retiring an already retired key changes nothing.
    /// </summary>
    GuardianKeyInfo Retire(string kid);
}

namespace Rempart.KeyProtection;

/// <summary>Who a wrap is for.</summary>
public enum WrapRecipient
{
    Owner,
    Guardian,
}

/// <summary>
/// The VM master key wrapped for one recipient (ECDH-ES P-384 + HKDF-SHA-384 + AES-256-GCM, see
/// <see cref="EcdhEsWrap"/>). Public: who it is for. Internal: the ephemeral key, nonce, ciphertext
/// and tag, which only the wrap scheme reads.
/// </summary>
public sealed class KeyWrap
{
    internal KeyWrap(WrapRecipient recipient, string? guardianId, string kid, byte[] ephemeralPublicKey, byte[] nonce, byte[] ciphertext, byte[] tag)
    {
        Recipient = recipient;
        GuardianId = guardianId;
        Kid = kid;
        EphemeralPublicKey = ephemeralPublicKey;
        Nonce = nonce;
        Ciphertext = ciphertext;
        Tag = tag;
    }

    public WrapRecipient Recipient { get; }

    /// <summary>The Guardian this wrap is for (null for the owner wrap).</summary>
    public string? GuardianId { get; }

    /// <summary>Key id of the recipient's P-384 key (<see cref="KeyIds.Of"/>).</summary>
    public string Kid { get; }

    /// <summary>The one algorithm of version 1: <see cref="EcdhEsWrap.Algorithm"/>.</summary>
    public string Algorithm => EcdhEsWrap.Algorithm;

    /// <summary>The sender's ephemeral P-384 public key, SPKI (120 bytes).</summary>
    internal byte[] EphemeralPublicKey { get; }

    /// <summary>AES-GCM nonce, 12 bytes, random.</summary>
    internal byte[] Nonce { get; }

    /// <summary>The VMK encrypted, 32 bytes.</summary>
    internal byte[] Ciphertext { get; }

    /// <summary>AES-GCM tag, 16 bytes.</summary>
    internal byte[] Tag { get; }

    /// <summary>This wrap in the canonical encoding the key protector's MAC covers.</summary>
    internal void WriteCanonical(Canonical c) =>
        c.Text(Recipient == WrapRecipient.Owner ? "owner" : "guardian")
         .Text(GuardianId ?? "")
         .Text(Kid)
         .Text(Algorithm)
         .Bytes(EphemeralPublicKey)
         .Bytes(Nonce)
         .Bytes(Ciphertext)
         .Bytes(Tag);
}

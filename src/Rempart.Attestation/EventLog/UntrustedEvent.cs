using Rempart.Tpm;

namespace Rempart.Attestation.EventLog;

/// <summary>One digest of an event for one bank.</summary>
public sealed record EventDigest(TpmAlgId Algorithm, ReadOnlyMemory<byte> Digest);

/// <summary>
/// An event as parsed from a log (TCG_PCR_EVENT or TCG_PCR_EVENT2, PFP §10.2.1/§10.2.2).
/// Nothing in it is trustworthy: its type, PCR and data mean something only after replay
/// against a verified quote (see <see cref="VerifiedEvent"/>). <see cref="Data"/> is a slice of
/// the log buffer, never a copy.
/// </summary>
public sealed record UntrustedEvent(
    int Number,
    long Offset,
    uint Pcr,
    TcgEventType UntrustedType,
    IReadOnlyList<EventDigest> Digests,
    ReadOnlyMemory<byte> Data)
{
    /// <summary>The digest for a bank, or null when the event carries none for it.</summary>
    public ReadOnlyMemory<byte>? DigestFor(TpmAlgId alg)
    {
        // An index loop: replay calls this for every event and bank, and foreach over an
        // IReadOnlyList would allocate an enumerator each time.
        for (int i = 0; i < Digests.Count; i++)
        {
            if (Digests[i].Algorithm == alg)
            {
                return Digests[i].Digest;
            }
        }
        return null;
    }
}

/// <summary>
/// An event whose PCR replayed to a value a verified quote attested: its digest is bound to
/// the TPM's state. Only the event log verifier creates these. Its data is trusted
/// only where the digest covers the data (<see cref="DataVerified"/>).
/// </summary>
public sealed class VerifiedEvent
{
    internal VerifiedEvent(UntrustedEvent e, bool dataVerified)
    {
        Event = e;
        DataVerified = dataVerified;
    }

    public UntrustedEvent Event { get; }

    public int Number => Event.Number;

    public uint Pcr => Event.Pcr;

    public TcgEventType Type => Event.UntrustedType;

    public ReadOnlyMemory<byte> Data => Event.Data;

    /// <summary>True when every digest of this event is the hash of its data (for types where that is the rule).</summary>
    public bool DataVerified { get; }
}

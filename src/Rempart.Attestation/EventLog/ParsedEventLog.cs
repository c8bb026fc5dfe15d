using Rempart.Tpm;

namespace Rempart.Attestation.EventLog;

/// <summary>The two layouts of PFP §10.2: SHA-1 only (TCG_PCR_EVENT) and crypto-agile (TCG_PCR_EVENT2).</summary>
public enum EventLogFormat
{
    Sha1Legacy,
    CryptoAgile,
}

/// <summary>A bank declared in the Spec ID event: algorithm and digest size (TCG_EfiSpecIdEventAlgorithmSize).</summary>
public sealed record SpecIdAlgorithm(TpmAlgId Algorithm, ushort DigestSize);

/// <summary>TCG_EfiSpecIDEvent (PFP §10.4.5.1): the header of a crypto-agile log.</summary>
public sealed record SpecIdEvent(
    string Signature,
    uint PlatformClass,
    byte SpecVersionMinor,
    byte SpecVersionMajor,
    byte SpecErrata,
    byte UintnSize,
    IReadOnlyList<SpecIdAlgorithm> Algorithms,
    ReadOnlyMemory<byte> VendorInfo);

/// <summary>
/// A parsed event log: its format, header, and events (the first, header event included as
/// number 0 in a crypto-agile log). Everything here is untrusted until verified.
/// </summary>
public sealed record ParsedEventLog(
    EventLogFormat Format,
    SpecIdEvent? SpecId,
    IReadOnlyList<UntrustedEvent> Events,
    int TrailingPaddingBytes)
{
    /// <summary>The banks the log carries digests for: the Spec ID algorithms, or SHA-1 for a legacy log.</summary>
    public IReadOnlyList<TpmAlgId> Banks => Format == EventLogFormat.CryptoAgile
        ? SpecId!.Algorithms.Select(a => a.Algorithm).ToList()
        : [TpmAlgId.Sha1];
}

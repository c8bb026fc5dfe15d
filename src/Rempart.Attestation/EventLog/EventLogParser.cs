using System.Text;
using Rempart.Tpm;

namespace Rempart.Attestation.EventLog;

/// <summary>
/// Parses TCG PC Client event logs (PFP v1.05 §10.2–10.4): the SHA-1 layout (TCG_PCR_EVENT)
/// and the crypto-agile layout introduced by a Spec ID Event03 header (TCG_PCR_EVENT2).
/// Parsing only splits the bytes: it gives <see cref="UntrustedEvent"/>s; replay and
/// verification decide what they mean.
/// </summary>
public static class EventLogParser
{
    /// <summary>"Spec ID Event03\0" (PFP §10.4.5.1).</summary>
    public static readonly byte[] SpecIdSignature = Encoding.ASCII.GetBytes("Spec ID Event03\0");

    /// <summary>A log larger than this is refused before anything else (firmware logs are tens of KiB).</summary>
    public const int MaxLogSize = 64 * 1024 * 1024;

    /// <summary>At most this many digests per event (one per bank; TPMs have at most a handful).</summary>
    public const int MaxDigestsPerEvent = 16;

    private const int LegacyHeaderSize = 4 + 4 + 20 + 4;

    public static bool TryParse(ReadOnlyMemory<byte> log, out ParsedEventLog? parsed, out EventLogFormatException? error)
    {
        try
        {
            parsed = Parse(log);
            error = null;
            return true;
        }
        catch (EventLogFormatException e)
        {
            parsed = null;
            error = e;
            return false;
        }
    }

    public static ParsedEventLog Parse(ReadOnlyMemory<byte> log)
    {
        if (log.Length == 0)
        {
            throw new EventLogFormatException(0, "a TCG event log (the file is empty)");
        }
        if (log.Length > MaxLogSize)
        {
            throw new EventLogFormatException(0, $"a log of at most {MaxLogSize} bytes (got {log.Length})");
        }
        var r = new LeReader(log);
        var first = ReadLegacy(ref r, 0);
        var events = new List<UntrustedEvent> { first };
        var specId = TryReadSpecId(first);
        if (specId is null)
        {
            int padding = ReadRest(ref r, events, (ref LeReader rr) => ReadLegacy(ref rr, events.Count));
            return new ParsedEventLog(EventLogFormat.Sha1Legacy, null, events, padding);
        }
        var sizes = specId.Algorithms.ToDictionary(a => a.Algorithm, a => (int)a.DigestSize);
        int pad = ReadRest(ref r, events, (ref LeReader rr) => ReadAgile(ref rr, events.Count, sizes));
        return new ParsedEventLog(EventLogFormat.CryptoAgile, specId, events, pad);
    }

    /// <summary>Reads events to the end; trailing bytes that are all 0x00 or all 0xFF are padding (log areas are pre-filled).</summary>
    private static int ReadRest(ref LeReader r, List<UntrustedEvent> events, ReadFn read)
    {
        while (!r.AtEnd)
        {
            var rest = r.Rest;
            if (!rest.ContainsAnyExcept((byte)0) || !rest.ContainsAnyExcept((byte)0xFF))
            {
                return rest.Length;
            }
            try
            {
                events.Add(read(ref r));
            }
            catch (EventLogFormatException e) when (!e.Expected.Contains(" in event ", StringComparison.Ordinal))
            {
                // Field names are constant on the hot path; the event number is added only on failure.
                throw new EventLogFormatException(e.Offset, $"{e.Expected} in event {events.Count}");
            }
        }
        return 0;
    }

    private delegate UntrustedEvent ReadFn(ref LeReader r);

    /// <summary>TCG_PCR_EVENT (PFP §10.2.1): pcrIndex, eventType, SHA-1 digest, eventSize, event.</summary>
    private static UntrustedEvent ReadLegacy(ref LeReader r, int number)
    {
        long at = r.Offset;
        if (r.Remaining < LegacyHeaderSize)
        {
            throw r.Error($"a {LegacyHeaderSize}-byte TCG_PCR_EVENT header for event {number} ({r.Remaining} bytes remain)");
        }
        uint pcr = r.U32("pcrIndex");
        var type = (TcgEventType)r.U32("eventType");
        var digest = r.Take(20, "SHA-1 digest");
        uint size = r.U32("eventSize");
        var data = r.Take(size, "event data of eventSize");
        return new UntrustedEvent(number, at, pcr, type, [new EventDigest(TpmAlgId.Sha1, digest)], data);
    }

    /// <summary>TCG_PCR_EVENT2 (PFP §10.2.2): pcrIndex, eventType, TPML_DIGEST_VALUES (little-endian), eventSize, event.</summary>
    private static UntrustedEvent ReadAgile(ref LeReader r, int number, Dictionary<TpmAlgId, int> sizes)
    {
        long at = r.Offset;
        uint pcr = r.U32("pcrIndex");
        var type = (TcgEventType)r.U32("eventType");
        long countAt = r.Offset;
        uint count = r.U32("digest count");
        if (count > sizes.Count || count > MaxDigestsPerEvent)
        {
            throw new EventLogFormatException(countAt, $"at most {sizes.Count} digests (the banks the Spec ID event declares) in event {number} (got {count})");
        }
        var digests = new List<EventDigest>((int)count);
        for (int i = 0; i < count; i++)
        {
            long algAt = r.Offset;
            var alg = (TpmAlgId)r.U16("digest algorithm");
            if (!sizes.TryGetValue(alg, out int size))
            {
                throw new EventLogFormatException(algAt, $"a digest algorithm declared in the Spec ID event (got 0x{(ushort)alg:x4}) in event {number}");
            }
            if (digests.Exists(d => d.Algorithm == alg))
            {
                throw new EventLogFormatException(algAt, $"one digest per algorithm in event {number} ({TpmHash.ToName(alg)} twice)");
            }
            digests.Add(new EventDigest(alg, r.Take(size, "digest")));
        }
        uint eventSize = r.U32("eventSize");
        var data = r.Take(eventSize, "event data of eventSize");
        return new UntrustedEvent(number, at, pcr, type, digests, data);
    }

    /// <summary>
    /// The first event is a Spec ID Event03 header when it is EV_NO_ACTION in PCR 0 whose data
    /// begins with that signature; it must then be a complete TCG_EfiSpecIDEvent with a zero
    /// digest. Anything else (such as a short StartupLocality EV_NO_ACTION) makes a SHA-1 log.
    /// </summary>
    private static SpecIdEvent? TryReadSpecId(UntrustedEvent first)
    {
        var data = first.Data;
        if (first.UntrustedType != TcgEventType.NoAction || first.Pcr != 0 || data.Length < SpecIdSignature.Length
            || !data.Span[..SpecIdSignature.Length].SequenceEqual(SpecIdSignature))
        {
            return null;
        }
        if (first.Digests[0].Digest.Span.ContainsAnyExcept((byte)0))
        {
            throw new EventLogFormatException(first.Offset + 8, "a zero digest in the Spec ID event");
        }
        var r = new LeReader(data, first.Offset + LegacyHeaderSize);
        r.Take(16, "Spec ID signature");
        uint platformClass = r.U32("platformClass");
        byte minor = r.U8("specVersionMinor");
        byte major = r.U8("specVersionMajor");
        byte errata = r.U8("specErrata");
        byte uintn = r.U8("uintnSize");
        long nAt = r.Offset;
        uint n = r.U32("numberOfAlgorithms");
        if (n == 0 || n > MaxDigestsPerEvent)
        {
            throw new EventLogFormatException(nAt, $"1 to {MaxDigestsPerEvent} algorithms in the Spec ID event (got {n})");
        }
        var algs = new List<SpecIdAlgorithm>((int)n);
        for (int i = 0; i < n; i++)
        {
            long at = r.Offset;
            var alg = (TpmAlgId)r.U16("algorithmId");
            ushort size = r.U16("digestSize");
            int known = TpmHash.DigestSize(alg);
            if (size == 0 || size > 64 || (known != 0 && known != size))
            {
                throw new EventLogFormatException(at, $"digest size {(known != 0 ? known : "1-64")} for algorithm 0x{(ushort)alg:x4} (got {size})");
            }
            if (algs.Exists(a => a.Algorithm == alg))
            {
                throw new EventLogFormatException(at, $"each algorithm once in the Spec ID event (0x{(ushort)alg:x4} twice)");
            }
            algs.Add(new SpecIdAlgorithm(alg, size));
        }
        byte vendorSize = r.U8("vendorInfoSize");
        var vendor = r.Take(vendorSize, "vendorInfo");
        if (!r.AtEnd)
        {
            throw r.Error($"the end of the Spec ID event ({r.Remaining} trailing bytes)");
        }
        return new SpecIdEvent("Spec ID Event03", platformClass, minor, major, errata, uintn, algs, vendor);
    }
}

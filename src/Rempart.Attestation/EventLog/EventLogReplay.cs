using System.Security.Cryptography;
using System.Text;
using Rempart.Tpm;

namespace Rempart.Attestation.EventLog;

/// <summary>Something about one event that a reader of the replay must know; <see cref="Id"/> is stable.</summary>
public sealed record ReplayNote(int EventNumber, string Id, string Message);

/// <summary>The PCR values a log produces, bank → PCR → value (only PCRs the log extends), and notes.</summary>
public sealed record ReplayResult(
    IReadOnlyDictionary<TpmAlgId, IReadOnlyDictionary<int, byte[]>> Banks,
    IReadOnlyList<ReplayNote> Notes,
    byte StartupLocality,
    bool HcrtmStart);

/// <summary>
/// Replays an event log into PCR values (PFP §10.3 and the TPM's PCR_Extend: new = H(old ‖ digest)).
/// Rules, from PFP v1.05 and the reference values in the fixtures:
/// <list type="bullet">
/// <item>EV_NO_ACTION is never extended (§10.4.1, Table 9).</item>
/// <item>A StartupLocality EV_NO_ACTION in PCR 0 ("StartupLocality\0" then one byte, §10.4.5.3) sets PCR 0's initial value to 00…0N.</item>
/// <item>An EV_EFI_HCRTM_EVENT means an H-CRTM started PCR 0 at locality 4 (§10.4.5.3; TPM Part 1 §34.3); its digest is extended.</item>
/// <item>Events for PCR 0xFFFFFFFF (and any index above 23) are kept and noted, not extended.</item>
/// <item>An event lacking a digest for a declared bank is noted, and that bank's PCR is marked unreplayable.</item>
/// </list>
/// Hashing reuses one <see cref="IncrementalHash"/> per bank: this is a hot path.
/// </summary>
public static class EventLogReplay
{
    public const int PcrCount = 24;

    private static readonly byte[] StartupLocalitySignature = Encoding.ASCII.GetBytes("StartupLocality\0");

    /// <summary>Replays with the standard rules, or with a quirk changing them (see <see cref="FirmwareQuirks"/>).</summary>
    public static ReplayResult Replay(ParsedEventLog log, FirmwareQuirk? quirk = null)
    {
        var banks = log.Banks.Where(TpmHash.Computable).ToList();
        var notes = new List<ReplayNote>();
        foreach (var b in log.Banks.Where(b => !TpmHash.Computable(b)))
        {
            notes.Add(new ReplayNote(0, "eventlog.bank.unsupported", $"bank {TpmHash.ToName(b)} is declared but cannot be replayed here"));
        }

        byte locality = 0;
        bool hcrtm = false;
        for (int i = 0; i < log.Events.Count; i++)
        {
            var e = log.Events[i];
            if (e.UntrustedType == TcgEventType.NoAction && e.Pcr == 0 && IsStartupLocality(e.Data.Span))
            {
                locality = e.Data.Span[StartupLocalitySignature.Length];
            }
            if (e.UntrustedType == TcgEventType.EfiHcrtmEvent)
            {
                hcrtm = true;
            }
        }
        if (hcrtm)
        {
            locality = 4;
        }
        if (quirk?.Pcr0InitialLocality is { } forced)
        {
            locality = forced;
        }

        // Per bank: PCR state and one reused hasher, in arrays indexed like `banks` (no
        // dictionary lookups on the per-event path).
        int nb = banks.Count;
        var state = new byte[]?[nb][];
        var hashers = new IncrementalHash[nb];
        var broken = new HashSet<(TpmAlgId, int)>();
        bool extendNoAction = quirk?.ExtendNoAction ?? false;
        int declared = log.Banks.Count;
        try
        {
            for (int b = 0; b < nb; b++)
            {
                state[b] = new byte[PcrCount][];
                hashers[b] = RentHasher(banks[b]);
            }
            Span<byte> concat = stackalloc byte[2 * 64];
            var events = log.Events;
            int first = log.Format == EventLogFormat.CryptoAgile ? 1 : 0;
            for (int i = first; i < events.Count; i++)
            {
                var e = events[i];
                if (e.UntrustedType == TcgEventType.NoAction && !extendNoAction)
                {
                    continue;
                }
                if (e.Pcr >= PcrCount)
                {
                    notes.Add(new ReplayNote(e.Number, "eventlog.event.pcr-out-of-range",
                        $"event {e.Number} ({TcgEventTypeNames.Name(e.UntrustedType)}) is for PCR 0x{e.Pcr:x8}: kept, not extended"));
                    continue;
                }
                int pcr = (int)e.Pcr;
                if (e.Digests.Count < declared)
                {
                    notes.Add(new ReplayNote(e.Number, "eventlog.event.missing-bank",
                        $"event {e.Number} carries {e.Digests.Count} digests, the log declares {declared} banks"));
                }
                for (int b = 0; b < nb; b++)
                {
                    var digest = e.DigestFor(banks[b]);
                    if (digest is null)
                    {
                        broken.Add((banks[b], pcr));
                        continue;
                    }
                    var current = state[b][pcr] ??= Initial(banks[b], pcr, locality);
                    var d = digest.Value.Span;
                    // old ‖ digest in one buffer: one call into the hash instead of two.
                    int n = current.Length + d.Length;
                    current.CopyTo(concat);
                    d.CopyTo(concat[current.Length..]);
                    var h = hashers[b];
                    h.AppendData(concat[..n]);
                    h.GetHashAndReset(current);
                }
            }
            foreach (var (bank, pcr) in broken)
            {
                notes.Add(new ReplayNote(0, "eventlog.replay.unreplayable", $"PCR {TpmHash.ToName(bank)}:{pcr} has events without a {TpmHash.ToName(bank)} digest"));
            }
            var result = new Dictionary<TpmAlgId, IReadOnlyDictionary<int, byte[]>>();
            for (int b = 0; b < nb; b++)
            {
                var map = new SortedDictionary<int, byte[]>();
                for (int i = 0; i < PcrCount; i++)
                {
                    if (state[b][i] is { } v && !broken.Contains((banks[b], i)))
                    {
                        map[i] = v;
                    }
                }
                result[banks[b]] = map;
            }
            return new ReplayResult(result, notes, locality, hcrtm);
        }
        catch
        {
            // A hasher in an unknown state is never reused.
            foreach (var h in hashers)
            {
                h?.Dispose();
            }
            hashers.AsSpan().Clear();
            throw;
        }
        finally
        {
            foreach (var h in hashers)
            {
                if (h is not null)
                {
                    ReturnHasher(h);
                }
            }
        }
    }

    // Creating an OpenSSL digest context per replay costs more than hashing a short log, so
    // each thread keeps one reset hasher per algorithm.
    [ThreadStatic]
    private static Dictionary<TpmAlgId, IncrementalHash>? t_hashers;

    private static IncrementalHash RentHasher(TpmAlgId alg)
    {
        if (t_hashers is not null && t_hashers.Remove(alg, out var h))
        {
            return h;
        }
        return IncrementalHash.CreateHash(TpmHash.Name(alg));
    }

    private static void ReturnHasher(IncrementalHash h)
    {
        t_hashers ??= [];
        var alg = h.AlgorithmName.Name switch
        {
            "SHA1" => TpmAlgId.Sha1,
            "SHA256" => TpmAlgId.Sha256,
            "SHA384" => TpmAlgId.Sha384,
            _ => TpmAlgId.Sha512,
        };
        if (!t_hashers.TryAdd(alg, h))
        {
            h.Dispose();
        }
    }

    /// <summary>A PCR's value after TPM2_Startup(CLEAR): zeros, PCR 0 ending in the locality, PCRs 17–22 all ones (PC Client PTP).</summary>
    public static byte[] Initial(TpmAlgId bank, int pcr, byte locality = 0)
    {
        var v = new byte[TpmHash.DigestSize(bank)];
        if (pcr is >= 17 and <= 22)
        {
            v.AsSpan().Fill(0xFF);
        }
        else if (pcr == 0)
        {
            v[^1] = locality;
        }
        return v;
    }

    internal static bool IsStartupLocality(ReadOnlySpan<byte> data) =>
        data.Length == StartupLocalitySignature.Length + 1 && data.StartsWith(StartupLocalitySignature);
}

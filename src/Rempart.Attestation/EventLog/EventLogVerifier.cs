using Rempart.Tpm;

namespace Rempart.Attestation.EventLog;

/// <summary>The verdict for one quoted PCR: matched (possibly through a firmware quirk) or not, with both values.</summary>
public sealed record PcrVerdict(TpmAlgId Bank, int Pcr, bool Matched, byte[] Quoted, byte[] Replayed, string? Quirk)
{
    /// <summary>Stable identifier of this check, e.g. <c>eventlog.replay.pcr7</c>.</summary>
    public string Id => $"eventlog.replay.pcr{Pcr}";
}

/// <summary>
/// The result of replaying a log against PCRs a verified quote attests: a verdict per quoted
/// PCR and bank, the events now bound to the TPM's state, and the replay notes.
/// </summary>
public sealed record LogVerification(
    IReadOnlyList<PcrVerdict> Verdicts,
    IReadOnlyList<VerifiedEvent> VerifiedEvents,
    IReadOnlyList<ReplayNote> Notes,
    IReadOnlyList<int> DigestMismatchEvents)
{
    public bool AllMatched => Verdicts.All(v => v.Matched);

    public IEnumerable<PcrVerdict> Mismatched => Verdicts.Where(v => !v.Matched);
}

/// <summary>
/// Binds an untrusted log to a verified quote (go-attestation's model): replay, compare each
/// quoted PCR, try the <see cref="FirmwareQuirks"/> table only for a PCR that failed, and
/// promote to <see cref="VerifiedEvent"/> the events of PCRs that matched in every quoted bank.
/// </summary>
public static class EventLogVerifier
{
    public static LogVerification Verify(ParsedEventLog log, QuotedPcrs quoted)
    {
        var replay = EventLogReplay.Replay(log);
        var verdicts = new List<PcrVerdict>();
        var quirkReplays = new Dictionary<string, ReplayResult>();
        foreach (var (bank, pcrs) in quoted.Values)
        {
            foreach (var (pcr, value) in pcrs)
            {
                var replayed = Value(replay, bank, pcr);
                if (replayed is not null && QuotedPcrs.Same(replayed, value))
                {
                    verdicts.Add(new PcrVerdict(bank, pcr, true, value, replayed, null));
                    continue;
                }
                string? explained = null;
                foreach (var quirk in FirmwareQuirks.All.Where(q => q.Pcrs.Contains(pcr)))
                {
                    if (!quirkReplays.TryGetValue(quirk.Id, out var alt))
                    {
                        quirkReplays[quirk.Id] = alt = EventLogReplay.Replay(log, quirk);
                    }
                    var v = Value(alt, bank, pcr);
                    if (v is not null && QuotedPcrs.Same(v, value))
                    {
                        explained = quirk.Id;
                        replayed = v;
                        break;
                    }
                }
                verdicts.Add(new PcrVerdict(bank, pcr, explained is not null, value, replayed ?? [], explained));
            }
        }

        var badPcrs = verdicts.Where(v => !v.Matched).Select(v => v.Pcr).ToHashSet();
        var quotedPcrs = verdicts.Select(v => v.Pcr).ToHashSet();
        var verified = new List<VerifiedEvent>();
        var mismatches = new List<int>();
        foreach (var e in log.Events)
        {
            var status = EventDataDigests.Check(e);
            if (status == DataDigestStatus.Mismatch)
            {
                mismatches.Add(e.Number);
            }
            if (e.Pcr < EventLogReplay.PcrCount && quotedPcrs.Contains((int)e.Pcr) && !badPcrs.Contains((int)e.Pcr)
                && e.UntrustedType != TcgEventType.NoAction)
            {
                verified.Add(new VerifiedEvent(e, status == DataDigestStatus.Match));
            }
        }
        return new LogVerification(verdicts, verified, replay.Notes, mismatches);
    }

    private static byte[]? Value(ReplayResult r, TpmAlgId bank, int pcr)
    {
        if (!r.Banks.TryGetValue(bank, out var m))
        {
            return null;
        }
        return m.TryGetValue(pcr, out var v) ? v : EventLogReplay.Initial(bank, pcr, pcr == 0 ? r.StartupLocality : (byte)0);
    }
}

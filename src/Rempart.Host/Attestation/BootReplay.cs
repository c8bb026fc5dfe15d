using Rempart.Attestation.EventLog;
using Rempart.Tpm;
using Rempart.Tpm.Structures;

namespace Rempart.Host.Attestation;

/// <summary>
/// Extends a TPM's PCRs with the digests of an event log, so a (software) TPM plays a host that
/// booted that firmware: every event replay would extend (not the Spec ID header, not
/// EV_NO_ACTION, not PCR 0xFFFFFFFF), with the digests of the banks both the log and the TPM have.
/// </summary>
public static class BootReplay
{
    /// <summary>Returns how many events were extended.</summary>
    public static int Extend(TpmClient tpm, ParsedEventLog log)
    {
        var allocated = tpm.GetPcrBanks().Selections.Where(s => s.Pcrs.Count > 0).Select(s => s.Hash).ToHashSet();
        int extended = 0;
        int first = log.Format == EventLogFormat.CryptoAgile ? 1 : 0;
        for (int i = first; i < log.Events.Count; i++)
        {
            var e = log.Events[i];
            if (e.UntrustedType == TcgEventType.NoAction || e.Pcr >= EventLogReplay.PcrCount)
            {
                continue;
            }
            var digests = e.Digests.Where(d => allocated.Contains(d.Algorithm)).Select(d => new TpmtHa(d.Algorithm, d.Digest.ToArray())).ToList();
            if (digests.Count == 0)
            {
                continue;
            }
            tpm.PcrExtend((int)e.Pcr, new TpmlDigestValues(digests));
            extended++;
        }
        return extended;
    }
}

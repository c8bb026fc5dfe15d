using System.Security.Cryptography;
using Rempart.Attestation.EventLog;
using Rempart.Attestation.Tests;
using Rempart.Host.Attestation;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Host.Tests.Attestation;

/// <summary>
/// A swtpm that "booted" a real firmware (a public event log extended into its PCRs, as
/// <c>rempart tpm replay-boot</c> does): its evidence carries the log, and the Guardian's
/// verifier binds the log to the quote.
/// </summary>
public sealed class EventLogEvidenceTests : IDisposable
{
    private const string Log = "go-tpm-tools__arch-linux-workstation.bin";
    private readonly Swtpm _tpm = new("sha1,sha256");

    public void Dispose() => _tpm.Dispose();

    [Fact]
    public void The_evidence_log_replays_to_every_quoted_PCR_0_to_7()
    {
        var logBytes = Fixtures.Bytes(Log);
        using var c = _tpm.Client();
        ReplayBoot(c, EventLogParser.Parse(logBytes));
        var akPublic = new HostIdentity(c).Read().AkPublic;
        var nonce = RandomNumberGenerator.GetBytes(32);
        var evidence = new EvidenceCollector(c).Collect("host-1", nonce, logBytes).Evidence;

        // The Guardian's side: verify the quote with the enrolled AK, then replay the log against it.
        Assert.Equal(logBytes, Convert.FromBase64String(evidence.EventLog));
        using var ak = new VerificationKey(akPublic);
        var quoted = QuotedPcrs.Verify(ak, Convert.FromBase64String(evidence.Quote),
            TpmtSignature.Parse(Convert.FromBase64String(evidence.QuoteSignature)), nonce,
            EvidenceTests.Lookup(EvidenceTests.Reported(evidence)), out var result);
        Assert.True(quoted is not null, result.ToString());
        var verification = EventLogVerifier.Verify(EventLogParser.Parse(Convert.FromBase64String(evidence.EventLog)), quoted);
        var firmware = verification.Verdicts.Where(v => v.Pcr <= 7).ToList();
        Assert.Equal(16, firmware.Count);
        Assert.All(firmware, v => Assert.True(v.Matched, $"{TpmHash.ToName(v.Bank)}:{v.Pcr} quoted {Convert.ToHexStringLower(v.Quoted)}, replayed {Convert.ToHexStringLower(v.Replayed)}"));
        Assert.Contains(firmware, v => !v.Quoted.AsSpan().SequenceEqual(new byte[v.Quoted.Length]));
    }

    /// <summary>Extends each event's digests into the allocated banks, as <c>rempart tpm replay-boot</c> does.</summary>
    private static void ReplayBoot(TpmClient c, ParsedEventLog log)
    {
        var banks = log.Banks.Where(b => b is TpmAlgId.Sha1 or TpmAlgId.Sha256).ToList();
        Assert.Equal(2, banks.Count);
        Assert.Equal(0, EventLogReplay.Replay(log).StartupLocality);
        foreach (var e in log.Events)
        {
            if (e.UntrustedType == TcgEventType.NoAction || e.Pcr >= EventLogReplay.PcrCount || (log.Format == EventLogFormat.CryptoAgile && e.Number == 0))
            {
                continue;
            }
            var digests = banks.Select(b => (b, d: e.DigestFor(b))).Where(x => x.d is not null).Select(x => new TpmtHa(x.b, x.d!.Value.ToArray())).ToList();
            c.PcrExtend((int)e.Pcr, new TpmlDigestValues(digests));
        }
    }
}

using System.Collections.Concurrent;
using System.Security.Cryptography;
using Rempart.Attestation.EventLog;
using Rempart.Attestation.Policy;
using Rempart.Attestation.Tests.EventLog;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;

namespace Rempart.Attestation.Tests.Policy;

/// <summary>
/// Claims from real fixtures through the real pipeline: parse the log, verify a quote into
/// <see cref="QuotedPcrs"/>, verify the log against it, build <see cref="PolicyClaims"/>.
/// </summary>
public static class PolicyEvidence
{
    /// <summary>The go-tpm-tools GCE COS 85 attestation: a real TPM quote (nonce 0x9009) and its log.</summary>
    public const string CosAttestation = "go-tpm-tools__gce-cos-85-nonce9009.pb";

    public const string SecureBootOffLog = "go-attestation__ubuntu_2104_shielded_vm_no_secure_boot_eventlog";

    /// <summary>SOURCES.md: events 0-21 as tpm2-tools' arch-linux; event 24 (EV_IPL, PCR 8) digest does not match its data.</summary>
    public const string ArchLinuxLog = "tpm2-tools__event-arch-linux.bin";

    private static readonly ConcurrentDictionary<string, PolicyClaims> Cache = new();

    private static readonly Lazy<(ParsedEventLog Log, QuotedPcrs Quoted)> Cos = new(LoadCos);

    /// <summary>Claims of the COS attestation, from its real quote (the SHA-256 one of its three).</summary>
    public static PolicyClaims CosClaims(IReadOnlyDictionary<string, string>? tpm = null)
    {
        var (log, quoted) = Cos.Value;
        return tpm is null
            ? Cache.GetOrAdd(CosAttestation, _ => PolicyClaims.From(EventLogVerifier.Verify(log, quoted), quoted, null))
            : PolicyClaims.From(EventLogVerifier.Verify(log, quoted), quoted, tpm);
    }

    public static ParsedEventLog CosLog => Cos.Value.Log;

    /// <summary>
    /// Claims of a fixture log that comes without a quote, bound by <see cref="SoftwareQuote.OfReplayWithTestAk"/>:
    /// what such a host's TPM would have quoted, had its PCRs held what the log replays to.
    /// </summary>
    public static PolicyClaims LogClaims(string logName, IReadOnlyDictionary<string, string>? tpm = null)
    {
        PolicyClaims Make()
        {
            var log = EventLogParser.Parse(Fixtures.Bytes(logName));
            var quoted = SoftwareQuote.OfReplayWithTestAk(log);
            var verification = EventLogVerifier.Verify(log, quoted);
            Assert.True(verification.AllMatched, $"{logName}: the test quote is of its own replay");
            return PolicyClaims.From(verification, quoted, tpm);
        }
        return tpm is null ? Cache.GetOrAdd(logName, _ => Make()) : Make();
    }

    private static (ParsedEventLog, QuotedPcrs) LoadCos()
    {
        var fields = ProtobufReader.Fields(Fixtures.Bytes(CosAttestation));
        var ak = TpmtPublic.Parse(fields.Single(f => f.Field == 1).Bytes);
        var log = EventLogParser.Parse(fields.Single(f => f.Field == 3).Bytes);
        using var key = new VerificationKey(ak);
        foreach (var q in fields.Where(f => f.Field == 2))
        {
            var qf = ProtobufReader.Fields(q.Bytes);
            var pcrMsg = ProtobufReader.Fields(qf.Single(f => f.Field == 3).Bytes);
            var bank = (TpmAlgId)pcrMsg.Single(f => f.Field == 1).Varint;
            if (bank != TpmAlgId.Sha256)
            {
                continue;
            }
            var values = pcrMsg.Where(f => f.Field == 2).Select(e => ProtobufReader.Fields(e.Bytes))
                .ToDictionary(e => (int)e.Single(x => x.Field == 1).Varint, e => e.Single(x => x.Field == 2).Bytes);
            var quoted = QuotedPcrs.Verify(key, qf.Single(f => f.Field == 1).Bytes, TpmtSignature.Parse(qf.Single(f => f.Field == 2).Bytes),
                Convert.FromHexString("9009"), (b, p) => b == bank && values.TryGetValue(p, out var v) ? v : null, out var result);
            Assert.True(quoted is not null, result.ToString());
            return (log, quoted);
        }
        throw new InvalidOperationException("no SHA-256 quote in " + CosAttestation);
    }
}

/// <summary>
/// A quote made in software by a test AK (an RSA key generated here), for fixture logs that come
/// without one: TPMS_ATTEST with TPMS_QUOTE_INFO over PCRs 0-23 of every bank the log has, the PCR
/// digest computed from the log's own replay (PcrComposite.Digest), signed RSASSA-SHA256. The
/// result goes through <see cref="QuotedPcrs.Verify"/>, which checks signature, magic, type, nonce
/// and PCR digest for real. Test-only: it proves nothing about any real host.
/// </summary>
public static class SoftwareQuote
{
    /// <summary>The firmwareVersion the test TPM signs: 7.85.0.0 as four 16-bit parts.</summary>
    public const ulong FirmwareVersion = 0x0007_0055_0000_0000;

    private static readonly Lazy<RSA> TestAk = new(() => RSA.Create(2048));

    public static QuotedPcrs OfReplayWithTestAk(ParsedEventLog log)
    {
        var replay = EventLogReplay.Replay(log);
        var rsa = TestAk.Value;
        var ak = KeyConversion.FromSubjectPublicKeyInfo(rsa.ExportSubjectPublicKeyInfo());
        var selection = new TpmlPcrSelection([.. replay.Banks.Keys.Order().Select(b => new TpmsPcrSelection(b, [.. Enumerable.Range(0, 24)]))]);
        var digest = PcrComposite.Digest(TpmAlgId.Sha256, selection, (b, p) =>
            replay.Banks[b].TryGetValue(p, out var v) ? v : EventLogReplay.Initial(b, p, p == 0 ? replay.StartupLocality : (byte)0));
        var nonce = RandomNumberGenerator.GetBytes(20);
        var attest = new TpmsAttest(TpmConstants.Generated, TpmSt.AttestQuote, ak.Name(), nonce,
            new TpmsClockInfo(1_000, 1, 0, true), FirmwareVersion, new TpmsQuoteInfo(selection, digest));
        var message = attest.ToBytes();
        var signature = TpmtSignature.RsaSignature(TpmAlgId.RsaSsa, TpmAlgId.Sha256,
            rsa.SignData(message, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1));
        using var key = new VerificationKey(ak);
        var quoted = QuotedPcrs.Verify(key, message, signature, nonce, null, out var result, replayFallback: replay);
        Assert.True(quoted is not null, result.ToString());
        return quoted;
    }
}

/// <summary>Parsing helpers for tests.</summary>
public static class Policies
{
    public static PolicyDocument Parse(string yaml)
    {
        var (document, errors) = PolicyDocument.Parse(yaml);
        Assert.True(document is not null, "parse errors:\n" + string.Join("\n", errors));
        return document;
    }

    /// <summary>A one-rule enforce policy around a rule body written as YAML (indented under "- ").</summary>
    public static PolicyDocument OneRule(string ruleYaml, string mode = "enforce") =>
        Parse($"id: test\nversion: 1\nmode: {mode}\nrules:\n- {ruleYaml.Trim().Replace("\n", "\n  ", StringComparison.Ordinal)}\n");
}

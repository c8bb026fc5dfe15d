using System.Text.Json;
using System.Text.RegularExpressions;
using Rempart.Attestation.EventLog;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;

namespace Rempart.Attestation.Tests.EventLog;

/// <summary>
/// Parsing and replay of the public firmware logs in ../shared/fixtures/eventlogs, against the
/// reference values their source projects assert (see SOURCES.md there).
/// </summary>
public sealed partial class FixtureReplayTests
{
    public static TheoryData<string> BinaryLogs() => [.. Fixtures.BinaryLogs()];

    public static TheoryData<string> ExpectedPcrFiles() =>
        [.. Directory.GetFiles(Fixtures.Dir, "*.expected-pcrs.json").Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal)];

    [Theory]
    [MemberData(nameof(BinaryLogs))]
    public void Every_binary_log_parses_or_is_a_named_format_error(string name)
    {
        var bytes = Fixtures.Bytes(name);
        if (name.EndsWith("-bogus", StringComparison.Ordinal) || name.EndsWith("-empty", StringComparison.Ordinal))
        {
            // keylime's negative cases: an empty file (nothing at offset 0), and 34 bytes of ASCII
            // text, whose "eventSize" field (bytes 28-31) claims far more than the 2 bytes left.
            var e = Assert.Throws<EventLogFormatException>(() => EventLogParser.Parse(bytes));
            Assert.Equal(bytes.Length == 0 ? 0 : 32, e.Offset);
            return;
        }
        if (name == "tpm2-tools__specid-vendordata.bin")
        {
            // SOURCES.md: its eventSize (37) does not count the 4 vendor bytes. tpm2-tools accepts
            // it; we do not read past an event's declared size. (tpm2-tss's variant is consistent.)
            var e = Assert.Throws<EventLogFormatException>(() => EventLogParser.Parse(bytes));
            Assert.Contains("vendorInfo", e.Expected);
            return;
        }
        var log = EventLogParser.Parse(bytes);
        Assert.NotEmpty(log.Events);
        Assert.True(bytes.Length == log.Events[^1].Offset + LengthOf(log, log.Events[^1]) + log.TrailingPaddingBytes,
            $"{name}: {bytes.Length} bytes, last event {log.Events[^1].Number} at {log.Events[^1].Offset} of {LengthOf(log, log.Events[^1])}, padding {log.TrailingPaddingBytes}");
        var replay = EventLogReplay.Replay(log);
        Assert.NotEmpty(replay.Banks);
    }

    [Fact]
    public void Event_counts_match_SOURCES_md()
    {
        // Counts stated in SOURCES.md ("N events (incl. Spec ID)") for a sample of logs.
        var expected = new Dictionary<string, int>
        {
            ["go-attestation__crypto_agile_eventlog"] = 27,
            ["go-attestation__ebs_event_missing_eventlog"] = 38,
            ["go-attestation__option_rom_eventlog"] = 61,
            ["go-attestation__sb_cert_eventlog"] = 15,
            ["go-tpm-tools__gdc-host.bin"] = 159,
            ["keylime__mb_log.bin"] = 102,
            ["tpm2-tools__event-bootorder.bin"] = 104,
            ["go-tpm-tools__ubuntu-2404-amd-sevsnp.bin"] = 117,
        };
        foreach (var (name, count) in expected)
        {
            Assert.Equal(count, EventLogParser.Parse(Fixtures.Bytes(name)).Events.Count);
        }
    }

    [Fact]
    public void A_first_EV_NO_ACTION_too_short_for_a_Spec_ID_event_makes_a_SHA1_log()
    {
        var log = EventLogParser.Parse(Fixtures.Bytes("go-attestation__short_no_action_eventlog"));
        Assert.Equal(EventLogFormat.Sha1Legacy, log.Format);
        Assert.Single(log.Events);
        Assert.Equal(TcgEventType.NoAction, log.Events[0].UntrustedType);
        Assert.Equal(17, log.Events[0].Data.Length);
    }

    [Theory]
    [MemberData(nameof(ExpectedPcrFiles))]
    public void Replay_equals_the_reference_PCR_values(string expectedFile)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir, expectedFile)));
        var logName = doc.RootElement.GetProperty("log_file").GetString()!;
        var replay = EventLogReplay.Replay(EventLogParser.Parse(Fixtures.Bytes(logName)));
        int compared = 0;
        foreach (var bank in doc.RootElement.GetProperty("pcrs").EnumerateObject())
        {
            Assert.True(TpmHash.TryParse(bank.Name, out var alg));
            foreach (var pcr in bank.Value.EnumerateObject())
            {
                int index = int.Parse(pcr.Name, System.Globalization.CultureInfo.InvariantCulture);
                var actual = replay.Banks[alg].TryGetValue(index, out var v) ? v : EventLogReplay.Initial(alg, index, index == 0 ? replay.StartupLocality : (byte)0);
                Assert.True(pcr.Value.GetString() == Convert.ToHexStringLower(actual), $"{logName} {bank.Name}:{index}: expected {pcr.Value.GetString()}, replayed {Convert.ToHexStringLower(actual)}");
                compared++;
            }
        }
        Assert.True(compared >= 1, $"no PCR compared in {expectedFile}");
    }

    [Theory]
    [InlineData("tpm2-tools__event-arch-linux.bin")]
    [InlineData("tpm2-tools__event-bootorder.bin")]
    [InlineData("tpm2-tools__event-gce-ubuntu-2104-log.bin")]
    public void Replay_equals_the_pcrs_section_of_tpm2_eventlog_yaml(string logName)
    {
        var yaml = File.ReadAllText(Path.Combine(Fixtures.Dir, logName + ".tpm2_eventlog.raw.yaml"));
        var replay = EventLogReplay.Replay(EventLogParser.Parse(Fixtures.Bytes(logName)));
        var section = yaml[yaml.IndexOf("\npcrs:", StringComparison.Ordinal)..];
        TpmAlgId bank = TpmAlgId.Null;
        int compared = 0;
        foreach (var line in section.Split('\n'))
        {
            var b = BankLine().Match(line);
            if (b.Success)
            {
                Assert.True(TpmHash.TryParse(b.Groups[1].Value, out bank));
                continue;
            }
            var m = PcrLine().Match(line);
            if (!m.Success)
            {
                continue;
            }
            int index = int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            // These three logs have no StartupLocality or H-CRTM event, so tpm2-tools' PCR 0 rule
            // (it extends EV_NO_ACTION and ignores H-CRTM) does not differ from the PFP's here.
            Assert.Equal(0, replay.StartupLocality);
            Assert.Equal(m.Groups[2].Value.ToLowerInvariant(), Convert.ToHexStringLower(replay.Banks[bank][index]));
            compared++;
        }
        Assert.True(compared >= 9, $"only {compared} PCRs compared");
    }

    [Fact]
    public void The_Windows_GCE_quote_verifies_except_its_empty_nonce_and_its_log_replays_to_the_quoted_PCRs()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir, "go-attestation__windows_gcp_shielded_vm.json")));
        var root = doc.RootElement;
        var ak = TpmtPublic.Parse(root.GetProperty("AK").GetProperty("Public").GetBytesFromBase64());
        var quote = root.GetProperty("Quote");
        var msg = quote.GetProperty("Quote").GetBytesFromBase64();
        var sig = TpmtSignature.Parse(quote.GetProperty("Signature").GetBytesFromBase64());
        var pcrs = root.GetProperty("Log").GetProperty("PCRs").EnumerateArray()
            .ToDictionary(p => p.GetProperty("Index").GetInt32(), p => p.GetProperty("Digest").GetBytesFromBase64());

        // The quote was taken with an empty nonce: our verifier refuses it for exactly that reason
        // (a nonce is mandatory), and every other check passes.
        var result = AttestationVerifier.VerifyQuote(ak, msg, sig, [], (b, p) => b == TpmAlgId.Sha1 && pcrs.TryGetValue(p, out var v) ? v : null);
        Assert.Equal(["quote.nonce"], result.Failures.Select(f => f.Id));
        Assert.Equal(24, ((TpmsQuoteInfo)result.Attest!.Attested).PcrSelect.TotalPcrs);

        var log = EventLogParser.Parse(root.GetProperty("Log").GetProperty("Raw").GetBytesFromBase64());
        Assert.Equal(EventLogFormat.Sha1Legacy, log.Format);
        var replay = EventLogReplay.Replay(log);
        foreach (var (index, value) in replay.Banks[TpmAlgId.Sha1])
        {
            Assert.True(value.AsSpan().SequenceEqual(pcrs[index]), $"sha1:{index}");
        }
    }

    [Theory]
    [InlineData("go-tpm-tools__gce-cos-85-nonce9009.pb", "9009")]
    [InlineData("go-tpm-tools__gce-cos-85-no-nonce.pb", "")]
    public void The_go_tpm_tools_attestations_verify_end_to_end_quote_and_replay(string file, string nonceHex)
    {
        var fields = ProtobufReader.Fields(Fixtures.Bytes(file));
        var ak = TpmtPublic.Parse(fields.Single(f => f.Field == 1).Bytes);
        var log = EventLogParser.Parse(fields.Single(f => f.Field == 3).Bytes);
        var nonce = Convert.FromHexString(nonceHex);
        using var key = new VerificationKey(ak);
        var quotes = fields.Where(f => f.Field == 2).ToList();
        Assert.Equal(3, quotes.Count);
        foreach (var q in quotes)
        {
            var qf = ProtobufReader.Fields(q.Bytes);
            var msg = qf.Single(f => f.Field == 1).Bytes;
            var sig = TpmtSignature.Parse(qf.Single(f => f.Field == 2).Bytes);
            var pcrMsg = ProtobufReader.Fields(qf.Single(f => f.Field == 3).Bytes);
            var bank = (TpmAlgId)pcrMsg.Single(f => f.Field == 1).Varint;
            var values = pcrMsg.Where(f => f.Field == 2).Select(e => ProtobufReader.Fields(e.Bytes))
                .ToDictionary(e => (int)e.Single(x => x.Field == 1).Varint, e => e.Single(x => x.Field == 2).Bytes);

            var quoted = QuotedPcrs.Verify(key, msg, sig, nonce, (b, p) => b == bank && values.TryGetValue(p, out var v) ? v : null, out var result);
            if (nonce.Length == 0)
            {
                Assert.Null(quoted);
                Assert.Equal(["quote.nonce"], result.Failures.Select(f => f.Id));
                continue;
            }
            Assert.True(quoted is not null, result.ToString());
            var verification = EventLogVerifier.Verify(log, quoted);
            // SOURCES.md: the log replays to the quoted PCRs 0-9 in every bank; PCR 10 holds IMA,
            // which is not in the firmware log. Every other PCR is at its reset value.
            Assert.Equal([10], verification.Mismatched.Select(m => m.Pcr));
            Assert.Equal(24, verification.Verdicts.Count);
            Assert.DoesNotContain(verification.VerifiedEvents, e => e.Pcr == 10);
            Assert.NotEmpty(verification.VerifiedEvents);
        }
    }

    [Fact]
    public void A_replayed_log_that_does_not_match_the_quote_names_the_PCR()
    {
        var fields = ProtobufReader.Fields(Fixtures.Bytes("go-tpm-tools__gce-cos-85-nonce9009.pb"));
        var ak = TpmtPublic.Parse(fields.Single(f => f.Field == 1).Bytes);
        var otherLog = EventLogParser.Parse(Fixtures.Bytes("go-tpm-tools__cos-93-amd-sev.bin"));
        var qf = ProtobufReader.Fields(fields.First(f => f.Field == 2).Bytes);
        var pcrMsg = ProtobufReader.Fields(qf.Single(f => f.Field == 3).Bytes);
        var bank = (TpmAlgId)pcrMsg.Single(f => f.Field == 1).Varint;
        var values = pcrMsg.Where(f => f.Field == 2).Select(e => ProtobufReader.Fields(e.Bytes))
            .ToDictionary(e => (int)e.Single(x => x.Field == 1).Varint, e => e.Single(x => x.Field == 2).Bytes);
        using var key = new VerificationKey(ak);
        var quoted = QuotedPcrs.Verify(key, qf.Single(f => f.Field == 1).Bytes, TpmtSignature.Parse(qf.Single(f => f.Field == 2).Bytes),
            Convert.FromHexString("9009"), (b, p) => b == bank && values.TryGetValue(p, out var v) ? v : null, out _)!;
        var verification = EventLogVerifier.Verify(otherLog, quoted);
        Assert.False(verification.AllMatched);
        Assert.Contains(verification.Mismatched, m => m.Id == "eventlog.replay.pcr4");
        Assert.DoesNotContain(verification.VerifiedEvents, e => verification.Mismatched.Any(m => m.Pcr == e.Pcr));
    }

    private static long LengthOf(ParsedEventLog log, UntrustedEvent e) =>
        log.Format == EventLogFormat.Sha1Legacy || e.Number == 0
            ? 32 + e.Data.Length
            : 4 + 4 + 4 + e.Digests.Sum(d => 2 + d.Digest.Length) + 4 + e.Data.Length;

    [GeneratedRegex(@"^  (sha1|sha256|sha384|sha512):\s*$")]
    private static partial Regex BankLine();

    [GeneratedRegex(@"^    (\d+)\s*:\s*0x([0-9a-fA-F]+)\s*$")]
    private static partial Regex PcrLine();
}

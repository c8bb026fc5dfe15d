using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Rempart.Attestation.Tests;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Cli.Tests;

/// <summary>
/// `eventlog show|replay|verify` and `tpm replay-boot` end to end: a swtpm replays a real
/// firmware log, quotes, and the quote plus the log verify; another log does not.
/// </summary>
public sealed class EventLogCliTests : IDisposable
{
    // SOURCES.md: crypto-agile, SHA1/SHA256, Arch Linux workstation, no StartupLocality event.
    private const string Log = "go-tpm-tools__arch-linux-workstation.bin";
    private readonly Swtpm _tpm = new("sha1,sha256");
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-elcli-").FullName;

    public void Dispose()
    {
        _tpm.Dispose();
        Directory.Delete(_dir, true);
    }

    private string F(string name) => Path.Combine(_dir, name);

    [Fact]
    public void A_swtpm_that_replayed_a_real_log_quotes_PCRs_the_log_explains()
    {
        var log = Path.Combine(Fixtures.Dir, Log);
        _tpm.FlushAll();
        var boot = Cli.Run("tpm", "replay-boot", "--tpm", _tpm.Address, "--eventlog", log);
        Assert.True(boot.ExitCode == 0, boot.Stderr);

        // The TPM's PCRs now equal the reference values go-tpm-tools asserts for this log.
        var pcrs = JsonNode.Parse(Cli.Run("tpm", "pcrs", "--tpm", _tpm.Address, "--format", "json").Ok().Stdout)!;
        var expected = JsonNode.Parse(File.ReadAllText(log + ".expected-pcrs.json"))!["pcrs"]!;
        foreach (var bank in new[] { "sha1", "sha256" })
        {
            foreach (var (pcr, value) in expected[bank]!.AsObject())
            {
                Assert.Equal(value!.GetValue<string>(), pcrs["banks"]![bank]![pcr]!.GetValue<string>());
            }
        }

        // Replaying again is refused: the PCRs are no longer at their reset values.
        var again = Cli.Run("tpm", "replay-boot", "--tpm", _tpm.Address, "--eventlog", log);
        Assert.Equal(2, again.ExitCode);
        Assert.Contains("not at its reset value", again.Stderr);

        var nonce = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        Cli.Run("tpm", "quote", "--tpm", _tpm.Address, "--nonce", nonce, "--pcrs", "sha256:0,1,2,3,4,5,6,7,8+sha1:0,7", "--out", F("q")).Ok();
        var ok = Cli.Run("eventlog", "verify", "--log", log, "--ak", F("q/ak.pub"), "--msg", F("q/quote.msg"), "--sig", F("q/quote.sig"), "--nonce", nonce, "--format", "json");
        Assert.True(ok.ExitCode == 0, ok.Stdout + ok.Stderr);
        var verdicts = JsonNode.Parse(ok.Stdout)!["pcrs"]!.AsArray();
        Assert.Equal(11, verdicts.Count);
        Assert.All(verdicts, v => Assert.True(v!["matched"]!.GetValue<bool>()));

        // The same quote with another machine's log: the PCRs that differ are named.
        var other = Path.Combine(Fixtures.Dir, "tpm2-tools__event-bootorder.bin");
        var bad = Cli.Run("eventlog", "verify", "--log", other, "--ak", F("q/ak.pub"), "--msg", F("q/quote.msg"), "--sig", F("q/quote.sig"), "--nonce", nonce, "--pcrs", F("q/pcrs.json"));
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("PCR  0: MISMATCH", bad.Stdout);
        Assert.Contains("invalid:", bad.Stdout);

        // Without --pcrs and with a log that does not hash to the quoted digest, the quote check itself fails.
        var noPcrs = Cli.Run("eventlog", "verify", "--log", other, "--ak", F("q/ak.pub"), "--msg", F("q/quote.msg"), "--sig", F("q/quote.sig"), "--nonce", nonce);
        Assert.Equal(1, noPcrs.ExitCode);
        Assert.Contains("quote.pcr-digest", noPcrs.Stdout);
    }

    [Fact]
    public void Show_and_replay_read_fixtures_and_refuse_garbage_and_device_TPMs()
    {
        var show = Cli.Run("eventlog", "show", Path.Combine(Fixtures.Dir, "go-attestation__sb_cert_eventlog"), "--format", "json");
        Assert.True(show.ExitCode == 0, show.Stderr);
        var events = JsonNode.Parse(show.Stdout)!["events"]!.AsArray();
        Assert.Equal(15, events.Count); // SOURCES.md: 15 events (incl. Spec ID), SecureBoot=1
        var secureBoot = events.Single(e => e!["type"]!.GetValue<string>() == "EV_EFI_VARIABLE_DRIVER_CONFIG" && e["data"]!.ToJsonString().Contains("\"SecureBoot\"", StringComparison.Ordinal));
        Assert.Contains("true", secureBoot!["data"]!.ToJsonString(), StringComparison.Ordinal);
        Assert.Equal("Match", secureBoot["digestCoversData"]!.GetValue<string>());
        var text = Cli.Run("eventlog", "show", Path.Combine(Fixtures.Dir, "go-attestation__sb_cert_eventlog")).Ok().Stdout;
        Assert.Contains("SecureBoot", text);

        var replay = Cli.Run("eventlog", "replay", Path.Combine(Fixtures.Dir, "go-tpm-tools__debian-10.bin"), "--format", "json");
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir, "go-tpm-tools__debian-10.bin.expected-pcrs.json")))!["pcrs"]!["sha1"]!;
        var banks = JsonNode.Parse(replay.Ok().Stdout)!["banks"]!["sha1"]!;
        foreach (var (pcr, value) in expected.AsObject())
        {
            Assert.Equal(value!.GetValue<string>(), banks[pcr]!.GetValue<string>());
        }

        var bogus = Cli.Run("eventlog", "replay", Path.Combine(Fixtures.Dir, "keylime__create-mb-policy__binary_bios_measurements-bogus"));
        Assert.Equal(2, bogus.ExitCode);
        Assert.Contains("malformed TCG event log at offset 32", bogus.Stderr);
        Assert.DoesNotContain("\n", bogus.Stderr.Trim());

        var device = Cli.Run("tpm", "replay-boot", "--tpm", "device:/dev/tpmrm0", "--eventlog", Path.Combine(Fixtures.Dir, Log));
        Assert.Equal(2, device.ExitCode);
        Assert.Contains("--force", device.Stderr);
    }
}

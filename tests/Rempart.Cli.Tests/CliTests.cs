using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Cli.Tests;

/// <summary>The `rempart` commands end to end against a real swtpm, cross-checked with tpm2-tools.</summary>
public sealed class CliTests : IDisposable
{
    private readonly Swtpm _tpm = new("sha1,sha256");
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-cli-").FullName;

    public void Dispose()
    {
        _tpm.Dispose();
        Directory.Delete(_dir, true);
    }

    private string F(string name) => Path.Combine(_dir, name);

    [Fact]
    public void Quote_then_verify_then_tpm2_checkquote_and_tampering_is_exit_1()
    {
        var nonce = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(20));
        _tpm.FlushAll();
        var q = Cli.Run("tpm", "quote", "--tpm", _tpm.Address, "--nonce", nonce, "--pcrs", "sha256:0,1,2,3,4,5,6,7+sha1:0", "--out", F("q"), "--ak-type", "ecc");
        Assert.True(q.ExitCode == 0, q.Stderr);
        foreach (var f in new[] { "ak.pub", "ak.pem", "ak.name", "quote.msg", "quote.sig", "pcrs.json" })
        {
            Assert.True(File.Exists(Path.Combine(F("q"), f)), f);
        }

        var ok = Cli.Run("quote", "verify", "--ak", F("q/ak.pub"), "--msg", F("q/quote.msg"), "--sig", F("q/quote.sig"), "--nonce", nonce, "--pcrs", F("q/pcrs.json"), "--format", "json");
        Assert.True(ok.ExitCode == 0, ok.Stdout + ok.Stderr);
        var json = JsonNode.Parse(ok.Stdout)!;
        Assert.True(json["valid"]!.GetValue<bool>());
        Assert.True(json["pcrDigestChecked"]!.GetValue<bool>());

        var theirs = Tool.Run("tpm2_checkquote", ["-u", F("q/ak.pem"), "-m", F("q/quote.msg"), "-s", F("q/quote.sig"), "-q", nonce, "-g", "sha256"]);
        Assert.True(theirs.ExitCode == 0, theirs.Stderr);

        var pem = Cli.Run("quote", "verify", "--ak", F("q/ak.pem"), "--msg", F("q/quote.msg"), "--sig", F("q/quote.sig"), "--nonce", nonce);
        Assert.Equal(0, pem.ExitCode);

        var wrongNonce = Cli.Run("quote", "verify", "--ak", F("q/ak.pub"), "--msg", F("q/quote.msg"), "--sig", F("q/quote.sig"), "--nonce", "00" + nonce[2..]);
        Assert.Equal(1, wrongNonce.ExitCode);
        Assert.Contains("quote.nonce", wrongNonce.Stdout);

        var msg = File.ReadAllBytes(F("q/quote.msg"));
        msg[^3] ^= 0x10;
        File.WriteAllBytes(F("tampered.msg"), msg);
        var tampered = Cli.Run("quote", "verify", "--ak", F("q/ak.pub"), "--msg", F("tampered.msg"), "--sig", F("q/quote.sig"), "--nonce", nonce, "--pcrs", F("q/pcrs.json"));
        Assert.Equal(1, tampered.ExitCode);
        Assert.Contains("quote.signature", tampered.Stdout);
        Assert.Contains("quote.pcr-digest", tampered.Stdout);

        // PCR values that differ from the quoted ones are caught even though the signature holds.
        var pcrs = JsonNode.Parse(File.ReadAllText(F("q/pcrs.json")))!;
        pcrs["banks"]!["sha256"]!["7"] = new string('a', 64);
        File.WriteAllText(F("other-pcrs.json"), pcrs.ToJsonString());
        var otherPcrs = Cli.Run("quote", "verify", "--ak", F("q/ak.pub"), "--msg", F("q/quote.msg"), "--sig", F("q/quote.sig"), "--nonce", nonce, "--pcrs", F("other-pcrs.json"));
        Assert.Equal(1, otherPcrs.ExitCode);
        Assert.Contains("quote.pcr-digest", otherPcrs.Stdout);
        Assert.DoesNotContain("quote.signature", otherPcrs.Stdout);
    }

    [Fact]
    public void Verify_accepts_a_quote_made_by_tpm2_tools()
    {
        var nonce = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        _tpm.Tpm2("tpm2_createek", "-c", F("ek.ctx"), "-G", "rsa", "-u", F("ek.pub")).Ok();
        _tpm.Tpm2("tpm2_createak", "-C", F("ek.ctx"), "-c", F("ak.ctx"), "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u", F("ak.pub")).Ok();
        _tpm.Tpm2("tpm2_quote", "-c", F("ak.ctx"), "-l", "sha1:0,1", "-q", nonce, "-m", F("quote.msg"), "-s", F("quote.sig"), "-g", "sha256").Ok();
        var r = Cli.Run("quote", "verify", "--ak", F("ak.pub"), "--msg", F("quote.msg"), "--sig", F("quote.sig"), "--nonce", nonce);
        Assert.True(r.ExitCode == 0, r.Stdout + r.Stderr);
        Assert.Contains("valid", r.Stdout);
    }

    [Fact]
    public void Pcrs_json_equals_tpm2_pcrread_and_info_and_ek_describe_the_swtpm()
    {
        _tpm.FlushAll();
        var pcrs = Cli.Run("tpm", "pcrs", "--tpm", _tpm.Address, "--format", "json");
        Assert.True(pcrs.ExitCode == 0, pcrs.Stderr);
        var banks = JsonNode.Parse(pcrs.Stdout)!["banks"]!;
        Assert.Equal(24, banks["sha1"]!.AsObject().Count);
        var tool = _tpm.Tpm2("tpm2_pcrread", "sha256:17").Ok().Stdout;
        Assert.Contains("0x" + banks["sha256"]!["17"]!.GetValue<string>().ToUpperInvariant(), tool);

        var info = Cli.Run("tpm", "info", "--tpm", _tpm.Address, "--format", "json");
        Assert.True(info.ExitCode == 0, info.Stderr);
        var i = JsonNode.Parse(info.Stdout)!;
        Assert.Equal("IBM", i["manufacturer"]!.GetValue<string>());
        Assert.Equal("2.0", i["family"]!.GetValue<string>());

        var ek = Cli.Run("tpm", "ek", "--tpm", _tpm.Address, "--format", "json");
        Assert.True(ek.ExitCode == 0, ek.Stderr);
        var e = JsonNode.Parse(ek.Stdout)!;
        Assert.True(e["certificate"]!["matchesEk"]!.GetValue<bool>());
        Assert.Contains("swtpm-localca", e["certificate"]!["issuer"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("unknown_option", 2, "--frobnicate")]
    [InlineData("bad_nonce_hex", 2, "not hex")]
    [InlineData("missing_file", 2, "no such file")]
    [InlineData("garbage_signature", 2, "not a TPMT_SIGNATURE")]
    [InlineData("garbage_ak", 2, "neither a TPM2B_PUBLIC nor a PEM")]
    [InlineData("bad_pcr_selection", 2, "must be 0-23")]
    [InlineData("unreachable_tpm", 3, "cannot connect")]
    [InlineData("bad_tpm_address", 2, "not understood")]
    [InlineData("unknown_command", 2, "unknown command")]
    public void Bad_input_gives_a_one_line_error_and_the_documented_exit_code(string name, int exitCode, string message)
    {
        File.WriteAllBytes(F("garbage"), [0x00, 0x14, 0x00, 0x0b, 0xff, 0xff, 1, 2, 3]);
        File.WriteAllBytes(F("empty.msg"), []);
        File.WriteAllBytes(F("valid-ak.pub"), Rempart.Tpm.Templates.KeyTemplates.AkRsa2048.ToSizedBytes());
        string[] args = name switch
        {
            "unknown_option" => ["quote", "verify", "--ak", "a", "--msg", "m", "--sig", "s", "--nonce", "00", "--frobnicate", "1"],
            "bad_nonce_hex" => ["quote", "verify", "--ak", F("garbage"), "--msg", F("garbage"), "--sig", F("garbage"), "--nonce", "xyz"],
            "missing_file" => ["quote", "verify", "--ak", F("nope.pub"), "--msg", F("garbage"), "--sig", F("garbage"), "--nonce", "00"],
            "garbage_signature" => ["quote", "verify", "--ak", F("valid-ak.pub"), "--msg", F("empty.msg"), "--sig", F("garbage"), "--nonce", "00"],
            "garbage_ak" => ["quote", "verify", "--ak", F("garbage"), "--msg", F("empty.msg"), "--sig", F("empty.msg"), "--nonce", "00"],
            "bad_pcr_selection" => ["tpm", "quote", "--tpm", _tpm.Address, "--nonce", "00", "--pcrs", "sha256:0,99", "--out", F("x")],
            "unreachable_tpm" => ["tpm", "info", "--tpm", "swtpm:tcp:127.0.0.1:1"],
            "bad_tpm_address" => ["tpm", "info", "--tpm", "tcp://nowhere"],
            _ => ["vm", "teleport"],
        };
        if (name == "garbage_ak")
        {
            File.WriteAllBytes(F("empty.msg"), [0x80, 0x01]);
        }
        var r = Cli.Run(args);
        Assert.Equal(exitCode, r.ExitCode);
        var err = r.Stderr.Trim();
        Assert.Contains(message, err);
        Assert.DoesNotContain("\n", err);
        Assert.DoesNotContain("   at ", r.Stdout + r.Stderr);
    }

    [Fact]
    public void Help_is_available_for_every_command()
    {
        foreach (var cmd in new[] { new[] { "--help" }, ["tpm", "info", "--help"], ["tpm", "pcrs", "--help"], ["tpm", "ek", "--help"], ["tpm", "quote", "--help"], ["quote", "verify", "--help"] })
        {
            var r = Cli.Run(cmd);
            Assert.True(r.ExitCode == 0, string.Join(' ', cmd));
            Assert.Contains("Usage", r.Stdout);
        }
    }
}

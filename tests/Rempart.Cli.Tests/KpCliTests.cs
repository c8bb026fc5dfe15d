using System.Text.Json.Nodes;
using Rempart.KeyProtection;
using Rempart.KeyProtection.Tests;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Cli.Tests;

/// <summary>
/// The tenant's verbs end to end through scripts/rempart: owner create, kp create/show/recover/verify,
/// with a software Guardian (in this process) playing the fabric side.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class KpCliTests : IDisposable
{
    private static readonly Dictionary<string, string> NoEnv = [];

    private const string Passphrase = "tenant passphrase 1";
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-kp-cli-").FullName;
    private readonly SoftwareGuardianKeys _guardian = new("guardian-1");
    private readonly SoftwareGuardianKeys _other = new("guardian-2");
    private readonly Dictionary<string, string> _env = new() { ["REMPART_OWNER_PASSPHRASE"] = Passphrase };

    public KpCliTests()
    {
        File.WriteAllBytes(F("guardian-1.json"), _guardian.Metadata().ToJsonBytes());
        File.WriteAllBytes(F("guardian-2.json"), _other.Metadata("Second Guardian").ToJsonBytes());
    }

    public void Dispose()
    {
        _guardian.Dispose();
        _other.Dispose();
        Directory.Delete(_dir, true);
    }

    private string F(string name) => Path.Combine(_dir, name);

    private Tool.Result Run(params string[] args) => Cli.Run(_env, args);

    private static void AssertOneLineError(Tool.Result r, int exitCode, string id)
    {
        Assert.True(r.ExitCode == exitCode, $"exit {r.ExitCode}, expected {exitCode}\nstdout: {r.Stdout}\nstderr: {r.Stderr}");
        Assert.Contains(id, r.Stderr);
        Assert.StartsWith("error: ", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.DoesNotContain("Exception", r.Stderr);
    }

    private void CreateOwner()
    {
        var r = Run("owner", "create", "--out", F("owner"));
        Assert.True(r.ExitCode == 0, r.Stderr);
    }

    private Tool.Result CreateKp(string output = "vm.kp", params string[] extra) =>
        Run(["kp", "create", "--owner", F("owner/owner.pub"), "--guardian", F("guardian-1.json"), "--shielding", "shielded",
            "--host-group", "group-b", "--host-group", "group-a", "--vm-id", "vm-1", "--out", F(output), .. extra]);

    [Fact]
    public void Owner_create_kp_create_show_recover_verify()
    {
        var owner = Run("owner", "create", "--out", F("owner"), "--format", "json");
        Assert.True(owner.ExitCode == 0, owner.Stderr);
        var ownerJson = JsonNode.Parse(owner.Stdout)!;
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(F("owner/owner.key")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(F("owner/owner.pub")));
        Assert.StartsWith("-----BEGIN ENCRYPTED PRIVATE KEY-----", File.ReadAllText(F("owner/owner.key")));
        var ownerPub = OwnerPublicKey.FromPem(File.ReadAllText(F("owner/owner.pub")));
        Assert.Equal(ownerPub.Kid, ownerJson["kid"]!.GetValue<string>());

        var again = Run("owner", "create", "--out", F("owner"));
        AssertOneLineError(again, 1, "owner.exists");

        var fp1 = _guardian.Metadata().Fingerprint;
        var fp2 = _other.Metadata().Fingerprint;
        var create = Run("kp", "create", "--owner", F("owner/owner.pub"), "--guardian", F("guardian-1.json"), "--guardian", F("guardian-2.json"),
            "--guardian-fingerprint", fp2.ToUpperInvariant(), "--guardian-fingerprint", fp1, "--shielding", "encryption-supported",
            "--host-group", "group-b", "--host-group", "group-a", "--vm-id", "vm-1", "--out", F("vm.kp"), "--format", "json");
        Assert.True(create.ExitCode == 0, create.Stderr);
        Assert.DoesNotContain("warning", create.Stderr);
        var created = JsonNode.Parse(create.Stdout)!;
        Assert.Equal("encryption-supported", created["shielding"]!.GetValue<string>());
        Assert.Equal(["group-a", "group-b"], created["hostGroups"]!.AsArray().Select(g => g!.GetValue<string>()));
        Assert.Equal(ownerPub.Kid, created["ownerKid"]!.GetValue<string>());
        Assert.Equal(["guardian-1", "guardian-2"], created["guardians"]!.AsArray().Select(g => g!["guardianId"]!.GetValue<string>()));
        Assert.True(created["guardianMetadata"]![0]!["pinned"]!.GetValue<bool>());
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead, File.GetUnixFileMode(F("vm.kp")));

        var show = Run("kp", "show", F("vm.kp"), "--format", "json");
        Assert.True(show.ExitCode == 0, show.Stderr);
        var shown = JsonNode.Parse(show.Stdout)!;
        Assert.Equal(created["kpId"]!.GetValue<string>(), shown["kpId"]!.GetValue<string>());
        Assert.False(shown["integrityChecked"]!.GetValue<bool>());
        var showText = Run("kp", "show", F("vm.kp"));
        Assert.Contains("host groups: group-a, group-b", showText.Stdout);
        Assert.Contains("guardian-2 key ", showText.Stdout);

        var recover = Run("kp", "recover", F("vm.kp"), "--owner-key", F("owner/owner.key"), "--out", F("vmk.bin"));
        Assert.True(recover.ExitCode == 0, recover.Stderr);
        Assert.Contains("integrity verified", recover.Stdout);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(F("vmk.bin")));
        var vmk = File.ReadAllBytes(F("vmk.bin"));
        Assert.Equal(32, vmk.Length);

        // The Guardian (both of them) opens the same key from the same file.
        var kp = KeyProtector.Parse(File.ReadAllBytes(F("vm.kp")));
        using (var byGuardian = kp.UnwrapWithGuardian(_guardian, _guardian.Keys))
        using (var byOther = kp.UnwrapWithGuardian(_other, _other.Keys))
        {
            Assert.Equal(vmk, byGuardian.Bytes.ToArray());
            Assert.Equal(vmk, byOther.Bytes.ToArray());
        }
        var hex = Convert.ToHexStringLower(vmk);
        Assert.DoesNotContain(hex, create.Stdout + create.Stderr + show.Stdout + showText.Stdout + recover.Stdout + recover.Stderr);

        var toStdout = Run("kp", "recover", F("vm.kp"), "--owner-key", F("owner/owner.key"), "--out", "-");
        Assert.True(toStdout.ExitCode == 0, toStdout.Stderr);
        Assert.Equal(hex, toStdout.Stdout.Trim());

        AssertOneLineError(Run("kp", "recover", F("vm.kp"), "--owner-key", F("owner/owner.key"), "--out", F("vmk.bin")), 1, "kp.exists");
        AssertOneLineError(Run("kp", "recover", F("vm.kp"), "--owner-key", F("owner/owner.key")), 2, "--out");

        var verify = Run("kp", "verify", F("vm.kp"), "--owner-key", F("owner/owner.key"), "--format", "json");
        Assert.True(verify.ExitCode == 0, verify.Stderr);
        Assert.True(JsonNode.Parse(verify.Stdout)!["integrityChecked"]!.GetValue<bool>());
        Assert.DoesNotContain(hex, verify.Stdout);
    }

    [Fact]
    public void Passphrase_file_works_and_a_wrong_or_missing_passphrase_is_refused()
    {
        File.WriteAllText(F("pass"), Passphrase + "\n");
        var owner = Cli.Run(NoEnv, "owner", "create", "--out", F("owner"), "--passphrase-file", F("pass"));
        Assert.True(owner.ExitCode == 0, owner.Stderr);
        var create = CreateKp();
        Assert.True(create.ExitCode == 0, create.Stderr);
        Assert.Contains("NOT pinned", create.Stdout);
        Assert.Contains("warning: Guardian metadata not pinned", create.Stderr);

        File.WriteAllText(F("wrong"), "not the passphrase\n");
        AssertOneLineError(Cli.Run(NoEnv, "kp", "recover", F("vm.kp"), "--owner-key", F("owner/owner.key"), "--passphrase-file", F("wrong"), "--out", "-"), 1, "owner.key.decrypt");
        AssertOneLineError(Cli.Run(NoEnv, "kp", "verify", F("vm.kp"), "--owner-key", F("owner/owner.key")), 2, "REMPART_OWNER_PASSPHRASE");
        AssertOneLineError(Cli.Run(NoEnv, "kp", "verify", F("vm.kp"), "--owner-key", F("owner/owner.key"), "--passphrase", Passphrase), 2, "--passphrase");
        var ok = Cli.Run(NoEnv, "kp", "verify", F("vm.kp"), "--owner-key", F("owner/owner.key"), "--passphrase-file", F("pass"));
        Assert.True(ok.ExitCode == 0, ok.Stderr);

        AssertOneLineError(Cli.Run(new Dictionary<string, string> { ["REMPART_OWNER_PASSPHRASE"] = "short" }, "owner", "create", "--out", F("owner2")), 2, "at least 8");
        Assert.False(Directory.Exists(F("owner2")));
    }

    [Fact]
    public void Bad_metadata_files_and_key_protectors_give_their_exit_codes_without_stack_traces()
    {
        CreateOwner();

        AssertOneLineError(CreateKp("a.kp", "--guardian", F("missing.json")), 2, "no such file");
        AssertOneLineError(Run("kp", "create", "--owner", F("owner/missing.pub"), "--guardian", F("guardian-1.json"), "--shielding", "shielded", "--host-group", "g", "--vm-id", "v", "--out", F("b.kp")), 2, "no such file");

        File.WriteAllText(F("garbage.json"), "{ not json");
        AssertOneLineError(Run("kp", "create", "--owner", F("owner/owner.pub"), "--guardian", F("garbage.json"), "--shielding", "shielded", "--host-group", "g", "--vm-id", "v", "--out", F("c.kp")), 2, "metadata.format");

        var tampered = JsonNode.Parse(File.ReadAllText(F("guardian-1.json")))!;
        tampered["url"] = "https://evil.example";
        File.WriteAllText(F("tampered.json"), tampered.ToJsonString());
        AssertOneLineError(Run("kp", "create", "--owner", F("owner/owner.pub"), "--guardian", F("tampered.json"), "--shielding", "shielded", "--host-group", "g", "--vm-id", "v", "--out", F("d.kp")), 1, "metadata.signature");

        // Metadata that verifies but is signed by another key than the pinned one.
        AssertOneLineError(Run("kp", "create", "--owner", F("owner/owner.pub"), "--guardian", F("guardian-2.json"), "--guardian-fingerprint", _guardian.Metadata().Fingerprint,
            "--shielding", "shielded", "--host-group", "g", "--vm-id", "v", "--out", F("e.kp")), 1, "metadata.fingerprint");
        AssertOneLineError(CreateKp("f.kp", "--guardian-fingerprint", "abcd"), 2, "64 hex digits");
        AssertOneLineError(Run("kp", "create", "--owner", F("owner/owner.key"), "--guardian", F("guardian-1.json"), "--shielding", "shielded", "--host-group", "g", "--vm-id", "v", "--out", F("g.kp")), 2, "owner.public.format");
        AssertOneLineError(Run("kp", "create", "--owner", F("owner/owner.pub"), "--guardian", F("guardian-1.json"), "--shielding", "none", "--host-group", "g", "--vm-id", "v", "--out", F("h.kp")), 2, "--shielding");
        AssertOneLineError(Run("kp", "create", "--owner", F("owner/owner.pub"), "--guardian", F("guardian-1.json"), "--shielding", "shielded", "--vm-id", "v", "--out", F("i.kp")), 2, "--host-group");
        Assert.Empty(Directory.GetFiles(_dir, "*.kp"));

        Assert.Equal(0, CreateKp().ExitCode);
        AssertOneLineError(CreateKp(), 1, "kp.exists");

        // A key protector whose policy was edited still shows (show checks shape only) but fails verify and recover.
        var json = File.ReadAllText(F("vm.kp"));
        File.WriteAllText(F("edited.kp"), json.Replace("\"group-a\",\"group-b\"", "\"group-a\",\"group-c\"", StringComparison.Ordinal));
        Assert.Equal(0, Run("kp", "show", F("edited.kp")).ExitCode);
        AssertOneLineError(Run("kp", "verify", F("edited.kp"), "--owner-key", F("owner/owner.key")), 1, "kp.wrap.tag");
        AssertOneLineError(Run("kp", "recover", F("edited.kp"), "--owner-key", F("owner/owner.key"), "--out", F("x.bin")), 1, "kp.wrap.tag");
        Assert.False(File.Exists(F("x.bin")));

        File.WriteAllText(F("broken.kp"), json.Replace("\"version\":1", "\"version\":7", StringComparison.Ordinal));
        AssertOneLineError(Run("kp", "show", F("broken.kp")), 2, "kp.format");
        AssertOneLineError(Run("kp", "show", F("nothing.kp")), 2, "no such file");
        AssertOneLineError(Run("kp", "show"), 2, "one key protector file");
    }
}

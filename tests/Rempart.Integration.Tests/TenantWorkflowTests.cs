using System.Text.Json.Nodes;
using Rempart.Attestation.Protocol;
using Rempart.Host.Guardian;
using Rempart.Host.Keys;
using Rempart.Integration.Tests.Ops;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Integration.Tests;

/// <summary>
/// The tenant's workflow through the CLI against a live Guardian: fetch and pin the Guardian's
/// metadata, make an owner key and a key protector offline, a host gets the key released, the
/// tenant sees where it went (with a tenant API token) and recovers the key offline as owner.
/// </summary>
public sealed class TenantWorkflowTests
{
    [Fact]
    public async Task Metadata_owner_key_protector_release_and_audit_trail_from_the_CLI()
    {
        await using var g = await GuardianFixture.StartAsync();
        using var client = new GuardianClient(g.Url);
        await g.CreateGroupAsync("prod");
        var dir = Directory.CreateTempSubdirectory("rempart-tenant-").FullName;
        var env = new Dictionary<string, string> { ["REMPART_OWNER_PASSPHRASE"] = "correct horse battery staple" };
        Tool.Result Cli(params string[] args) => Tool.Run(Path.Combine(OpsSupport.RepoRoot, "scripts", "rempart"), args, env, timeoutMs: 300_000);
        string F(string name) => Path.Combine(dir, name);
        try
        {
            var meta = Cli("guardian", "metadata", "--guardian", g.Url.ToString(), "--out", F("guardian.json"), "--format", "json").Ok();
            var fingerprint = JsonNode.Parse(meta.Stdout)!["fingerprint"]!.GetValue<string>();
            Cli("owner", "create", "--out", F("owner")).Ok();
            var wrongPin = Cli("kp", "create", "--owner", F("owner/owner.pub"), "--guardian", F("guardian.json"), "--guardian-fingerprint", new string('0', 64),
                "--shielding", "shielded", "--host-group", "prod", "--vm-id", "vm-1", "--out", F("vm.kp"));
            Assert.Equal(1, wrongPin.ExitCode);
            Cli("kp", "create", "--owner", F("owner/owner.pub"), "--guardian", F("guardian.json"), "--guardian-fingerprint", fingerprint,
                "--shielding", "shielded", "--host-group", "prod", "--vm-id", "vm-1", "--out", F("vm.kp")).Ok();

            using var host = new SwtpmHost();
            await g.ApproveAsync((await host.EnrolAsync(client)).HostId, "prod");
            var nonce = await client.NonceAsync(host.HostId!);
            var binding = host.Collect(nonce.Nonce);
            var token = (await client.AttestAsync(binding.Evidence)).Token!;
            var release = await client.ReleaseAsync(new ReleaseRequest(await File.ReadAllTextAsync(F("vm.kp")), token));
            string released;
            using (var c = host.Tpm.Client())
            using (var vmk = new ReleaseUnwrapper(c).Unwrap(binding.BindingKeyPrivate, binding.BindingKeyPublic, binding.BindingPcrs, release))
            {
                released = Convert.ToHexStringLower(vmk.Bytes);
            }

            string[] admin = ["--guardian", g.Url.ToString(), "--token-file", Path.Combine(g.DataDir, "admin-token")];
            OpsSupport.Cli(["token", "create", "tenant-a", "--role", "tenant", "--out", F("tenant-token"), .. admin]).Ok();
            var trail = Cli("kp", "releases", F("vm.kp"), "--guardian", g.Url.ToString(), "--token-file", F("tenant-token"), "--format", "json").Ok();
            var entry = Assert.Single(JsonNode.Parse(trail.Stdout)!.AsArray())!;
            Assert.Equal((release.ReleaseId, host.HostId), (entry["releaseId"]!.GetValue<string>(), entry["host"]!.GetValue<string>()));
            Assert.Contains(release.ReleaseId, Cli("kp", "releases", "--vm-id", "vm-1", "--guardian", g.Url.ToString(), "--token-file", F("tenant-token")).Ok().Stdout);

            // The owner recovers the same key offline, without the Guardian.
            Cli("kp", "recover", F("vm.kp"), "--owner-key", F("owner/owner.key"), "--out", F("vmk")).Ok();
            Assert.Equal(released, Convert.ToHexStringLower(await File.ReadAllBytesAsync(F("vmk"))));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}

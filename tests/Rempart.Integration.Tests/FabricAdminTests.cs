using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Rempart.Attestation.Protocol;
using Rempart.Host.Attestation;
using Rempart.Host.Guardian;
using Rempart.Integration.Tests.Ops;

namespace Rempart.Integration.Tests;

/// <summary>
/// Fabric administration through the CLI against a live Guardian and a swtpm host: TPMs without
/// EK certificate (allow list), host removal, group update/delete, API tokens with roles.
/// </summary>
public sealed class FabricAdminTests
{
    [Fact]
    public async Task A_TPM_without_EK_certificate_enrols_only_while_an_admin_allows_its_EK()
    {
        await using var g = await GuardianFixture.StartAsync();
        using var client = new GuardianClient(g.Url);
        using var host = new SwtpmHost();
        EnrolmentRequest request;
        using (var c = host.Tpm.Client())
        {
            request = new HostIdentity(c).BuildRequest("no-cert") with { EkCertificate = null };
        }
        var refused = await Assert.ThrowsAsync<GuardianException>(() => client.StartEnrolmentAsync(request));
        Assert.Equal("enrol.ek.no-certificate", refused.Id);
        Assert.Contains("allow-ek", refused.Message);

        var dir = Directory.CreateTempSubdirectory("rempart-ek-").FullName;
        try
        {
            // The EK file as tpm2-tools writes it (TCG default template), and as `rempart tpm ek --out` does.
            var toolsFile = Path.Combine(dir, "ek.tpm2tools.pub");
            host.Tpm.Tpm2("tpm2_createek", "-c", Path.Combine(dir, "ek.ctx"), "-G", "rsa", "-u", toolsFile).Ok();
            var ours = Path.Combine(dir, "ek.pub");
            OpsSupport.Cli(["tpm", "ek", "--tpm", host.Tpm.Address, "--out", ours]).Ok();
            Assert.Equal(File.ReadAllBytes(toolsFile), File.ReadAllBytes(ours));
            Assert.Equal(Convert.FromBase64String(request.EkPublic), File.ReadAllBytes(ours));

            string[] admin = ["--guardian", g.Url.ToString(), "--token-file", Path.Combine(g.DataDir, "admin-token")];
            var allowed = OpsSupport.Cli(["host", "allow-ek", "--ek-public", toolsFile, "--comment", "lab box", "--format", "json", .. admin]).Ok();
            var ekName = JsonNode.Parse(allowed.Stdout)!["ekName"]!.GetValue<string>();
            Assert.Contains(ekName, OpsSupport.Cli(["host", "allowed-eks", .. admin]).Ok().Stdout);

            // Allowed: the credential round still proves the AK lives with that EK, and the host waits for approval.
            var challenge = await client.StartEnrolmentAsync(request);
            EnrolmentActivation answer;
            using (var c = host.Tpm.Client())
            {
                answer = new CredentialActivator(c).Answer(challenge);
            }
            var enrolled = await client.ActivateAsync(challenge.EnrolmentId, answer);
            Assert.Equal("pending", enrolled.State);

            // Disallowed again: new enrolments of that EK are refused.
            OpsSupport.Cli(["host", "disallow-ek", ekName, .. admin]).Ok();
            Assert.Equal("(none)", OpsSupport.Cli(["host", "allowed-eks", .. admin]).Ok().Stdout.Trim());
            OpsSupport.Cli(["host", "remove", enrolled.HostId, .. admin]).Ok();
            Assert.Equal("enrol.ek.no-certificate", (await Assert.ThrowsAsync<GuardianException>(() => client.StartEnrolmentAsync(request))).Id);

            // Something that is not an EK is refused by name.
            File.WriteAllBytes(Path.Combine(dir, "junk"), [0, 3, 1, 2, 3]);
            var junk = OpsSupport.Cli(["host", "allow-ek", "--ek-public", Path.Combine(dir, "junk"), .. admin]);
            Assert.Equal(2, junk.ExitCode);
            Assert.DoesNotContain("   at ", junk.Stderr);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public async Task Removing_a_host_revokes_its_token_stops_its_attestation_and_lets_it_enrol_again()
    {
        await using var g = await GuardianFixture.StartAsync();
        using var client = new GuardianClient(g.Url);
        await g.CreateGroupAsync("prod");
        using var host = new SwtpmHost();
        var id = (await host.EnrolAsync(client)).HostId;
        await g.ApproveAsync(id, "prod");
        var result = await host.AttestAsync(client);
        Assert.Equal("affirming", result.Status);
        string[] admin = ["--guardian", g.Url.ToString(), "--token-file", Path.Combine(g.DataDir, "admin-token")];

        var removed = OpsSupport.Cli(["host", "remove", id, "--format", "json", .. admin]).Ok();
        Assert.Equal(1, JsonNode.Parse(removed.Stdout)!["revokedTokens"]!.GetValue<int>());
        var validation = await (await g.Http.PostAsJsonAsync("v1/tokens/validate", new { token = result.Token })).Content.ReadFromJsonAsync<JsonObject>();
        Assert.False(validation!["valid"]!.GetValue<bool>());
        Assert.Equal("attest.host.unknown", (await Assert.ThrowsAsync<GuardianException>(() => client.NonceAsync(id))).Id);
        Assert.Equal(1, OpsSupport.Cli(["host", "remove", id, .. admin]).ExitCode);

        var again = await host.EnrolAsync(client);
        Assert.Equal((id, "pending"), (again.HostId, again.State));
        var audit = await g.Admin.GetStringAsync("v1/audit");
        Assert.Contains("host.removed", audit);
    }

    [Fact]
    public async Task Host_groups_are_updated_keep_their_policy_and_are_deleted_only_when_empty()
    {
        await using var g = await GuardianFixture.StartAsync();
        using var client = new GuardianClient(g.Url);
        string[] admin = ["--guardian", g.Url.ToString(), "--token-file", Path.Combine(g.DataDir, "admin-token")];
        OpsSupport.Cli(["hostgroup", "create", "edge", .. admin]).Ok();
        (await g.Admin.PostAsJsonAsync("v1/policies", new { document = "id: p1\nversion: 1\nmode: enforce\nrules:\n  - name: secure-boot\n    secureBoot:\n      required: true\n" })).EnsureSuccessStatusCode();
        (await g.Admin.PostAsJsonAsync("v1/hostgroups/edge/policy", new { policyId = "p1" })).EnsureSuccessStatusCode();

        var updated = OpsSupport.Cli(["hostgroup", "update", "edge", "--description", "edge sites", "--approve-ek-issuer", "CN=x", "--format", "json", .. admin]).Ok();
        var json = JsonNode.Parse(updated.Stdout)!;
        Assert.Equal(("edge sites", "CN=x", "p1"), (json["description"]!.GetValue<string>(), json["approveEkIssuer"]!.GetValue<string>(), json["policyId"]!.GetValue<string>()));
        OpsSupport.Cli(["hostgroup", "update", "edge", "--no-auto-approve", .. admin]).Ok();
        OpsSupport.Cli(["hostgroup", "create", "edge", "--description", "again", .. admin]).Ok();
        var groups = JsonNode.Parse(OpsSupport.Cli(["hostgroup", "list", "--format", "json", .. admin]).Ok().Stdout)!.AsArray();
        Assert.Equal(("again", null, "p1"), (groups[0]!["description"]!.GetValue<string>(), groups[0]!["approveEkIssuer"]?.GetValue<string>(), groups[0]!["policyId"]!.GetValue<string>()));
        Assert.Equal(2, OpsSupport.Cli(["hostgroup", "update", "edge", .. admin]).ExitCode);

        using var host = new SwtpmHost();
        var id = (await host.EnrolAsync(client)).HostId;
        await g.ApproveAsync(id, "edge");
        var busy = OpsSupport.Cli(["hostgroup", "delete", "edge", .. admin]);
        Assert.Equal(1, busy.ExitCode);
        Assert.Contains("group.not-empty", busy.Stderr);
        OpsSupport.Cli(["host", "remove", id, .. admin]).Ok();
        OpsSupport.Cli(["hostgroup", "delete", "edge", .. admin]).Ok();
        Assert.Equal("(none)", OpsSupport.Cli(["hostgroup", "list", .. admin]).Ok().Stdout.Trim());
        Assert.Contains("group.unknown", OpsSupport.Cli(["hostgroup", "delete", "edge", .. admin]).Stderr);
    }

    [Fact]
    public async Task Api_tokens_carry_their_role_and_stop_working_when_revoked()
    {
        await using var g = await GuardianFixture.StartAsync();
        string[] admin = ["--guardian", g.Url.ToString(), "--token-file", Path.Combine(g.DataDir, "admin-token")];
        var dir = Directory.CreateTempSubdirectory("rempart-tok-").FullName;
        try
        {
            var file = Path.Combine(dir, "auditor-token");
            var created = OpsSupport.Cli(["token", "create", "audit-team", "--role", "auditor", "--out", file, "--format", "json", .. admin]).Ok();
            Assert.Null(JsonNode.Parse(created.Stdout)!["token"]);
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
            var id = JsonNode.Parse(created.Stdout)!["id"]!.GetValue<string>();
            string[] auditor = ["--guardian", g.Url.ToString(), "--token-file", file];

            OpsSupport.Cli(["host", "list", .. auditor]).Ok();
            var forbidden = OpsSupport.Cli(["hostgroup", "create", "x", .. auditor]);
            Assert.Equal(1, forbidden.ExitCode);
            Assert.Contains("auth.forbidden", forbidden.Stderr);
            Assert.Contains("audit-team", OpsSupport.Cli(["token", "list", .. admin]).Ok().Stdout);

            OpsSupport.Cli(["token", "revoke", id, .. admin]).Ok();
            Assert.Contains("auth.invalid", OpsSupport.Cli(["host", "list", .. auditor]).Stderr);

            var bad = OpsSupport.Cli(["token", "create", "x", "--role", "root", .. admin]);
            Assert.Contains("apitoken.role", bad.Stderr);
            var list = JsonNode.Parse(OpsSupport.Cli(["token", "list", "--format", "json", .. admin]).Ok().Stdout)!.AsArray();
            var adminId = list.Single(t => t!["role"]!.GetValue<string>() == "fabric-admin")!["id"]!.GetValue<string>();
            var last = await g.Admin.DeleteAsync($"v1/apitokens/{adminId}");
            Assert.Equal(HttpStatusCode.Conflict, last.StatusCode);
            Assert.Contains("apitoken.last-admin", await last.Content.ReadAsStringAsync());
            Assert.DoesNotContain("tokenHash", OpsSupport.Cli(["token", "list", "--format", "json", .. admin]).Ok().Stdout);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}

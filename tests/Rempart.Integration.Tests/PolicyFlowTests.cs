using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Rempart.Host.Guardian;

namespace Rempart.Integration.Tests;

/// <summary>
/// Policies in the Guardian: a Secure-Boot-required policy on a host group affirms a host that
/// booted with Secure Boot and refuses one that did not (naming the rule and the event); a draft
/// is tested against the fleet's stored evidence before it is enforced; a baseline is captured.
/// </summary>
public sealed class PolicyFlowTests
{
    // SOURCES.md: cos-85-amd-sev has SecureBoot=1; the Arch Linux workstation's SecureBoot variable is empty (off).
    private const string SecureBootOn = "go-tpm-tools__cos-85-amd-sev.bin";
    private const string SecureBootOff = "go-tpm-tools__arch-linux-workstation.bin";

    private static string Policy(string mode, int version = 1) => $"""
        id: secure-boot
        version: {version}
        mode: {mode}
        rules:
          - name: secure-boot
            description: UEFI Secure Boot was on
            secureBoot:
              required: true
        """;

    [Fact]
    public async Task A_Secure_Boot_policy_affirms_the_right_host_refuses_the_other_and_can_be_tested_first()
    {
        await using var g = await GuardianFixture.StartAsync();
        using var client = new GuardianClient(g.Url);
        await g.CreateGroupAsync("sb");
        using var good = new SwtpmHost(SecureBootOn);
        using var bad = new SwtpmHost(SecureBootOff);
        await g.ApproveAsync((await good.EnrolAsync(client, "sb-on")).HostId, "sb");
        await g.ApproveAsync((await bad.EnrolAsync(client, "sb-off")).HostId, "sb");

        // Without a policy both are affirmed (their logs replay to their quotes).
        Assert.Equal("affirming", (await good.AttestAsync(client)).Status);
        Assert.Equal("affirming", (await bad.AttestAsync(client)).Status);

        // What would fail? The draft against the fleet's stored evidence, before enforcing it.
        var test = JsonNode.Parse(await (await g.Admin.PostAsJsonAsync("v1/policies/test", new { document = Policy("enforce") })).Content.ReadAsStringAsync())!;
        var hosts = test["hosts"]!.AsArray();
        Assert.True(hosts.Single(h => h!["hostId"]!.GetValue<string>() == good.HostId)!["result"]!["compliant"]!.GetValue<bool>());
        var badResult = hosts.Single(h => h!["hostId"]!.GetValue<string>() == bad.HostId)!["result"]!;
        Assert.False(badResult["compliant"]!.GetValue<bool>());
        Assert.Equal("policy.rule.secure-boot", badResult["failures"]![0]!["id"]!.GetValue<string>());

        // Audit mode first: the off host is reported (warning) but keeps a token.
        (await g.Admin.PostAsJsonAsync("v1/policies", new { document = Policy("audit") })).EnsureSuccessStatusCode();
        (await g.Admin.PostAsJsonAsync("v1/hostgroups/sb/policy", new { policyId = "secure-boot" })).EnsureSuccessStatusCode();
        var warned = await bad.AttestAsync(client);
        Assert.Equal("warning", warned.Status);
        Assert.NotNull(warned.Token);
        Assert.Equal(["policy.rule.secure-boot"], warned.Failures.Select(f => f.Id));

        // Then enforced: refused, naming the rule, expected next to actual and the event.
        (await g.Admin.PostAsJsonAsync("v1/policies", new { document = Policy("enforce", 2) })).EnsureSuccessStatusCode();
        var refused = await bad.AttestAsync(client);
        Assert.Equal("contraindicated", refused.Status);
        var failure = Assert.Single(refused.Failures);
        Assert.Equal("policy.rule.secure-boot", failure.Id);
        Assert.Contains("expected", failure.Message);
        Assert.Contains("event", failure.Message);
        var affirmed = await good.AttestAsync(client);
        Assert.Equal("affirming", affirmed.Status);
        var claims = JsonNode.Parse(System.Buffers.Text.Base64Url.DecodeFromChars(affirmed.Token!.Split('.')[1]))!;
        Assert.Equal("secure-boot", claims["ear.appraisal-policy-id"]!.GetValue<string>());
        Assert.Equal(2, claims["rempart.policy-version"]!.GetValue<int>());

        // A released version never changes; a bad document is refused with the field named.
        var again = await g.Admin.PostAsJsonAsync("v1/policies", new { document = Policy("audit", 2) });
        Assert.Equal(409, (int)again.StatusCode);
        var invalid = await g.Admin.PostAsJsonAsync("v1/policies", new { document = "id: x\nversion: 1\nrules:\n  - name: y\n    frobnicate: {}\n" });
        Assert.Equal(400, (int)invalid.StatusCode);
        Assert.Contains("frobnicate", await invalid.Content.ReadAsStringAsync());

        // A baseline from the good host is a policy document that parses and passes on that host.
        var baseline = await (await g.Admin.PostAsJsonAsync("v1/policies/baseline", new { hostId = good.HostId, id = "cos-baseline" })).Content.ReadAsStringAsync();
        Assert.Contains("id: cos-baseline", baseline);
        var check = JsonNode.Parse(await (await g.Admin.PostAsJsonAsync("v1/policies/test", new { document = baseline, hostId = good.HostId })).Content.ReadAsStringAsync())!;
        Assert.True(check["hosts"]![0]!["result"]!["compliant"]!.GetValue<bool>(), check.ToJsonString());
    }
}

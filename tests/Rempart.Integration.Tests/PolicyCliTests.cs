using Rempart.Host.Guardian;
using Rempart.Integration.Tests.Ops;

namespace Rempart.Integration.Tests;

/// <summary>`rempart policy create|assign|test|baseline` against a live Guardian with an attested host.</summary>
public sealed class PolicyCliTests
{
    [Fact]
    public async Task Policies_are_created_tested_against_the_fleet_assigned_and_baselined_from_the_CLI()
    {
        await using var g = await GuardianFixture.StartAsync();
        using var client = new GuardianClient(g.Url);
        await g.CreateGroupAsync("cos");
        using var host = new SwtpmHost("go-tpm-tools__cos-85-amd-sev.bin"); // SOURCES.md: SecureBoot=1
        await g.ApproveAsync((await host.EnrolAsync(client, "cos-host")).HostId, "cos");
        Assert.Equal("affirming", (await host.AttestAsync(client)).Status);
        string[] connection = ["--guardian", g.Url.ToString(), "--token-file", Path.Combine(g.DataDir, "admin-token")];
        var dir = Directory.CreateTempSubdirectory("rempart-policy-").FullName;
        try
        {
            var good = Path.Combine(dir, "sb.yaml");
            File.WriteAllText(good, "id: sb\nversion: 1\nmode: enforce\nrules:\n  - name: secure-boot\n    secureBoot:\n      required: true\n");
            var bad = Path.Combine(dir, "cmdline.yaml");
            File.WriteAllText(bad, "id: cmd\nversion: 1\nmode: enforce\nrules:\n  - name: lockdown\n    kernelCmdline:\n      mustContain: [lockdown=integrity]\n");

            var ok = OpsSupport.Cli(["policy", "test", "--policy", good, "--all", .. connection]);
            Assert.True(ok.ExitCode == 0, ok.Stdout + ok.Stderr);
            Assert.Contains("compliant", ok.Stdout);

            var wouldFail = OpsSupport.Cli(["policy", "test", "--policy", bad, "--host", host.HostId!, .. connection]);
            Assert.Equal(1, wouldFail.ExitCode);
            Assert.Contains("policy.rule.lockdown", wouldFail.Stdout);

            Assert.Equal(0, OpsSupport.Cli(["policy", "create", "--policy", good, .. connection]).ExitCode);
            Assert.Equal(0, OpsSupport.Cli(["policy", "assign", "--group", "cos", "--policy-id", "sb", .. connection]).ExitCode);
            Assert.Equal("affirming", (await host.AttestAsync(client)).Status);

            var baseline = OpsSupport.Cli(["policy", "baseline", "--host", host.HostId!, "--id", "cos-ref", .. connection]);
            Assert.True(baseline.ExitCode == 0, baseline.Stderr);
            Assert.Contains("id: cos-ref", baseline.Stdout);
            var baselineFile = Path.Combine(dir, "baseline.yaml");
            File.WriteAllText(baselineFile, baseline.Stdout);
            var self = OpsSupport.Cli(["policy", "test", "--policy", baselineFile, "--host", host.HostId!, .. connection]);
            Assert.True(self.ExitCode == 0, self.Stdout + self.Stderr);

            var usage = OpsSupport.Cli(["policy", "test", "--policy", good, .. connection]);
            Assert.Equal(2, usage.ExitCode);
            Assert.Contains("--host H or --all", usage.Stderr);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}

using Rempart.Attestation.Policy;
using Rempart.Tpm;

namespace Rempart.Attestation.Tests.Policy;

/// <summary>A baseline captured from one host's verified evidence passes on it, and names what differs on another.</summary>
public sealed class PolicyBaselineTests
{
    private static readonly Lazy<PolicyDocument> CosBaseline = new(() => PolicyBaseline.Capture(PolicyEvidence.CosClaims(), "gce-cos-85"));

    [Fact]
    public void Captures_PCRs_0_to_7_secure_boot_boot_applications_and_the_kernel_command_line()
    {
        var baseline = CosBaseline.Value;
        var claims = PolicyEvidence.CosClaims();

        Assert.Equal("gce-cos-85", baseline.Id);
        Assert.Equal(PolicyMode.Enforce, baseline.Mode);
        var pcrs = baseline.Rules.OfType<PcrRule>().ToList();
        Assert.Equal(Enumerable.Range(0, 8), pcrs.Select(p => p.Index));
        Assert.All(pcrs, p => Assert.Equal(TpmAlgId.Sha256, p.Bank));
        Assert.All(pcrs, p => Assert.Equal(Convert.ToHexStringLower(claims.Pcrs[TpmAlgId.Sha256][p.Index]), p.Values.Single()));
        var sb = Assert.Single(baseline.Rules.OfType<SecureBootRule>());
        Assert.True(sb.Required);
        Assert.Equal(claims.Databases["db"].Single().Entries, sb.Databases["db"].Only);
        var apps = Assert.Single(baseline.Rules.OfType<DigestsRule>());
        Assert.Equal(claims.BootApplications.Select(a => a.Digests[TpmAlgId.Sha256]), apps.Allow);
        var cmdline = Assert.Single(baseline.Rules.OfType<KernelCmdlineRule>());
        Assert.StartsWith("/syslinux/vmlinuz.A init=/usr/lib/systemd/systemd", cmdline.EqualTo, StringComparison.Ordinal);
    }

    [Fact]
    public void Passes_on_the_evidence_it_was_captured_from()
    {
        var result = PolicyEvaluator.Evaluate(CosBaseline.Value, PolicyEvidence.CosClaims());

        Assert.True(result.Passed, string.Join("\n", result.Failures));
        Assert.True(result.Compliant);
    }

    [Fact]
    public void Fails_on_another_machine_naming_the_PCRs_and_events_that_differ()
    {
        // COS 93 on the same GCE firmware: PCRs 0-3, 6 and 7 are the same, the boot chain is not.
        var result = PolicyEvaluator.Evaluate(CosBaseline.Value, PolicyEvidence.LogClaims("go-tpm-tools__cos-93-amd-sev.bin"));

        Assert.False(result.Passed);
        var failures = result.Failures.ToDictionary(f => f.Id);
        Assert.Equal(["policy.rule.boot-applications", "policy.rule.kernel-cmdline", "policy.rule.pcr-sha256-4", "policy.rule.pcr-sha256-5"],
            failures.Keys.Order(StringComparer.Ordinal));

        var pcr4 = failures["policy.rule.pcr-sha256-4"];
        Assert.Equal($"sha256:4 = {CosBaseline.Value.Rules.OfType<PcrRule>().Single(p => p.Index == 4).Values[0]}", pcr4.Expected);
        Assert.StartsWith("sha256:4 = ", pcr4.Actual, StringComparison.Ordinal);
        Assert.Contains("#22 EV_EFI_BOOT_SERVICES_APPLICATION", pcr4.Actual, StringComparison.Ordinal);
        Assert.Equal([12, 17, 22, 23, 41], pcr4.EventNumbers);

        var apps = failures["policy.rule.boot-applications"];
        Assert.Equal([22, 23, 41], apps.EventNumbers);
        Assert.Contains("\\EFI\\BOOT\\BOOTX64.EFI", apps.Actual, StringComparison.Ordinal);

        var cmdline = failures["policy.rule.kernel-cmdline"];
        Assert.Equal([43], cmdline.EventNumbers);
        Assert.Contains("lacks noswap", cmdline.Actual, StringComparison.Ordinal);
    }

    [Fact]
    public void ToYaml_round_trips_to_a_policy_with_the_same_verdicts()
    {
        string yaml = CosBaseline.Value.ToYaml();
        var reread = Policies.Parse(yaml);

        Assert.Equal(yaml, reread.ToYaml());
        Assert.Equal(CosBaseline.Value.Rules.Select(r => r.Id), reread.Rules.Select(r => r.Id));
        var other = PolicyEvidence.LogClaims("go-tpm-tools__cos-93-amd-sev.bin");
        Assert.Equal(
            PolicyEvaluator.Evaluate(CosBaseline.Value, other).Failures.Select(f => f.ToString()),
            PolicyEvaluator.Evaluate(reread, other).Failures.Select(f => f.ToString()));
        Assert.True(PolicyEvaluator.Evaluate(reread, PolicyEvidence.CosClaims()).Compliant);
    }

    [Fact]
    public void Captures_no_secure_boot_rule_when_it_was_off_and_no_command_line_its_digest_does_not_cover()
    {
        var off = PolicyBaseline.Capture(PolicyEvidence.LogClaims(PolicyEvidence.SecureBootOffLog), "ubuntu");
        Assert.Empty(off.Rules.OfType<SecureBootRule>());
        Assert.Single(off.Rules.OfType<KernelCmdlineRule>());
        // One bank per quoted bank: this log (and its test quote) has SHA-1, SHA-256 and SHA-384.
        Assert.Equal(24, off.Rules.OfType<PcrRule>().Count());

        var arch = PolicyBaseline.Capture(PolicyEvidence.LogClaims(PolicyEvidence.ArchLinuxLog), "arch");
        Assert.Empty(arch.Rules.OfType<KernelCmdlineRule>());
        Assert.True(PolicyEvaluator.Evaluate(arch, PolicyEvidence.LogClaims(PolicyEvidence.ArchLinuxLog)).Compliant);
    }
}

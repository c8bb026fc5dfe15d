using Rempart.Attestation.EventLog;
using Rempart.Attestation.Policy;

namespace Rempart.Attestation.Tests.Policy;

/// <summary>
/// Kernel command line rules over GRUB (PCR 8), systemd-boot (PCR 12) and Red Hat GRUB events, and
/// the rule that decoded data a digest does not cover is never evidence.
/// </summary>
public sealed class KernelCmdlinePolicyTests
{
    [Fact]
    public void A_command_line_whose_digest_does_not_cover_it_fails_the_rule_that_reads_it()
    {
        // tpm2-tools ships a warning for this event: its digest is not the hash of the UTF-16 text it carries.
        var log = EventLogParser.Parse(Fixtures.Bytes(PolicyEvidence.ArchLinuxLog));
        Assert.Equal(DataDigestStatus.Mismatch, EventDataDigests.Check(log.Events[24]));
        var claims = PolicyEvidence.LogClaims(PolicyEvidence.ArchLinuxLog);
        var cmdline = Assert.Single(claims.KernelCmdline);
        Assert.False(cmdline.DataVerified);
        Assert.Contains("intel_iommu=on", cmdline.Text, StringComparison.Ordinal);

        // The text does say intel_iommu=on: it must still not satisfy the rule.
        var result = PolicyEvaluator.Evaluate(Policies.OneRule("name: iommu\nkernelCmdline: {mustContain: [intel_iommu=on]}"), claims);

        var failure = Assert.Single(result.Failures);
        Assert.Equal("policy.rule.iommu", failure.Id);
        Assert.Equal([24], failure.EventNumbers);
        Assert.Contains("digest does not cover", failure.Message, StringComparison.Ordinal);
        Assert.Contains("event #24 (EV_IPL, PCR 8) says 'initrd=", failure.Actual, StringComparison.Ordinal);
    }

    [Fact]
    public void An_events_rule_reading_that_event_s_data_fails_too()
    {
        var rule = Policies.OneRule("name: ipl-text\nevents:\n  select: {pcr: 8, type: EV_IPL}\n  condition: {op: matches, field: data.text, value: '.*intel_iommu=on.*'}");

        var failure = Assert.Single(PolicyEvaluator.Evaluate(rule, PolicyEvidence.LogClaims(PolicyEvidence.ArchLinuxLog)).Failures);

        Assert.Equal([24], failure.EventNumbers);
        Assert.Contains("its digest is not the hash of its data", failure.Actual, StringComparison.Ordinal);
        Assert.Equal("event data covered by the event's digest", failure.Expected);
    }

    /// <summary>Case → log, rule body, null when it passes or (a text of the failure, the events it names).</summary>
    public static TheoryData<string, string, string, string?, int[]> Cases() => new()
    {
        // COS (GRUB kernel_cmdline, event 42 of the attestation's log; 43 in cos-85-amd-sev.bin).
        { "grub_must_contain", PolicyEvidence.CosAttestation, "{mustContain: [ro, 'init=', module.sig_enforce=1]}", null, [] },
        { "grub_must_contain_fails", PolicyEvidence.CosAttestation, "{mustContain: [quiet, ro]}", "lacks quiet", [42] },
        { "grub_must_not_contain", PolicyEvidence.CosAttestation, "{mustNotContain: ['init=', single]}", "contains init=/usr/lib/systemd/systemd", [42] },
        { "grub_matches", PolicyEvidence.CosAttestation, "{matches: '/syslinux/vmlinuz\\.A .* console=ttyS0 .*'}", null, [] },
        { "grub_matches_is_whole", PolicyEvidence.CosAttestation, "{matches: 'console=ttyS0'}", "does not match", [42] },
        { "grub_equal_fails_with_the_difference", PolicyEvidence.CosAttestation, "{equal: '/syslinux/vmlinuz.A ro quiet'}", "lacks quiet; has in addition init=/usr/lib/systemd/systemd", [42] },
        { "regex_timeout_fails_closed", PolicyEvidence.CosAttestation, "{matches: '(.|.)*X'}", "timed out", [42] },
        // systemd-boot on Fedora 37: the UTF-16 command line, twice in PCR 12, " console=ttyS0 console=tty0 efi=debug ".
        { "systemd_equal_ignores_spacing", "tpm2-tools__event-sd-boot-fedora37.bin", "{equal: 'console=ttyS0  console=tty0 efi=debug'}", null, [] },
        { "systemd_must_not_contain", "tpm2-tools__event-sd-boot-fedora37.bin", "{mustNotContain: ['efi=']}", "contains efi=debug", [23, 24] },
        // RHEL 8 GRUB logs "grub_kernel_cmdline " (event 78).
        { "red_hat_grub", "go-tpm-tools__rhel8-uefi.bin", "{mustContain: [ro, 'root='], mustNotContain: [quiet]}", null, [] },
        { "red_hat_grub_fails", "go-tpm-tools__rhel8-uefi.bin", "{mustNotContain: [ro]}", "contains ro", [78] },
        // Ubuntu 24.04: GRUB's text (event 105) is checked; the EFI stub's LoadOptions tag (113) is a digest only.
        { "ubuntu_text_with_a_load_options_tag", "go-tpm-tools__ubuntu-2404-amd-sevsnp.bin", "{mustContain: ['panic=-1']}", null, [] },
        // No kernel command line measured at all (a short firmware-only log).
        { "none_measured", "go-attestation__sb_cert_eventlog", "{mustContain: [ro]}", "no verified event measures a kernel command line", [] },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Kernel_command_line(string name, string log, string body, string? failure, int[] events)
    {
        var claims = log == PolicyEvidence.CosAttestation ? PolicyEvidence.CosClaims() : PolicyEvidence.LogClaims(log);
        var result = PolicyEvaluator.Evaluate(Policies.OneRule($"name: cmdline\nkernelCmdline: {body}"), claims);
        if (failure is null)
        {
            Assert.True(result.Compliant, $"{name}: {string.Join("\n", result.Failures)}");
            return;
        }
        var f = Assert.Single(result.Failures);
        Assert.Equal("policy.rule.cmdline", f.Id);
        Assert.Contains(failure, f.Message + " | " + f.Actual, StringComparison.Ordinal);
        Assert.Equal(events, f.EventNumbers);
    }

    [Fact]
    public void The_EFI_stub_LoadOptions_tag_is_a_digest_only_claim()
    {
        var claims = PolicyEvidence.LogClaims("go-tpm-tools__ubuntu-2404-amd-sevsnp.bin");

        Assert.Equal([105, 113], claims.KernelCmdline.Select(c => c.EventNumber));
        var tag = claims.KernelCmdline[1];
        Assert.Null(tag.Text);
        Assert.Equal(9, tag.Pcr);
        Assert.Contains("digest only", tag.Source, StringComparison.Ordinal);
    }
}

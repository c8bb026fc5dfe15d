using Rempart.Attestation.EventLog;
using Rempart.Attestation.Policy;
using Rempart.Tpm;

namespace Rempart.Attestation.Tests.Policy;

/// <summary>The pcr, digests and tpm rules, and the claims they read, on the COS attestation.</summary>
public sealed class RuleKindTests
{
    private static string Pcr(int index) => Convert.ToHexStringLower(PolicyEvidence.CosClaims().Pcrs[TpmAlgId.Sha256][index]);

    private const string Zero32 = "0000000000000000000000000000000000000000000000000000000000000000";

    /// <summary>Case → rule YAML (after "name: r\n"), null when it passes or (a text of the failure, the events it names).</summary>
    public static TheoryData<string, string, string?, int[]> Cases() => new()
    {
        { "pcr_equals", $"pcr: {{bank: sha256, index: 7, equals: {Pcr(7)}}}", null, [] },
        { "pcr_equals_fails_naming_its_events", $"pcr: {{bank: sha256, index: 0, equals: {Zero32}}}", $"sha256:0 = {Pcr(0)}", [1, 2, 13] },
        { "pcr_in", $"pcr: {{bank: sha256, index: 4, in: [{Zero32}, {Pcr(4).ToUpperInvariant()}]}}", null, [] },
        { "pcr_not_in_fails", $"pcr: {{bank: sha256, index: 4, notIn: [{Pcr(4)}]}}", "a forbidden value", [12, 17, 22, 23, 40] },
        { "pcr_of_a_bank_not_quoted", $"pcr: {{bank: sha1, index: 0, equals: {new string('0', 40)}}}", "sha1:0 not quoted", [] },
        { "pcr_that_does_not_replay", $"pcr: {{bank: sha256, index: 10, equals: {Zero32}}}", "the log does not replay to it", [] },
        { "digests_allow_default_selects_boot_applications", $"digests: {{allow: [{App(22)}, {App(23)}, {App(40)}]}}", null, [] },
        { "digests_allow_fails", $"digests: {{allow: [{App(22)}]}}", "2 of 3 events", [23, 40] },
        { "digests_deny_fails", $"digests: {{deny: [{App(23)}]}}", $"sha256:{App(23)}", [23] },
        { "digests_deny_passes", $"digests: {{deny: [{Zero32}]}}", null, [] },
        { "digests_in_another_bank", $"digests: {{bank: sha1, select: {{pcr: 0, type: EV_S_CRTM_VERSION}}, allow: [{Sha1Of(1)}]}}", null, [] },
        { "digests_allow_with_nothing_selected", $"digests: {{select: {{pcr: 2, type: EV_EFI_BOOT_SERVICES_DRIVER}}, allow: [{Zero32}]}}", "proves nothing", [] },
        { "tpm_firmware_from_the_quote", "tpm: {minFirmwareVersion: 8214.1297}", null, [] },
        { "tpm_firmware_too_old", "tpm: {minFirmwareVersion: 8214.1298}", "older than 8214.1298", [] },
        { "tpm_manufacturer_unknown", "tpm: {manufacturers: [GOOG]}", "not known", [] },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Rule(string name, string body, string? failure, int[] events)
    {
        var result = PolicyEvaluator.Evaluate(Policies.OneRule("name: r\n" + body), PolicyEvidence.CosClaims());
        if (failure is null)
        {
            Assert.True(result.Compliant, $"{name}: {string.Join("\n", result.Failures)}");
            return;
        }
        var f = Assert.Single(result.Failures);
        Assert.Equal("policy.rule.r", f.Id);
        Assert.Contains(failure, f.Message + " | " + f.Actual, StringComparison.Ordinal);
        Assert.Equal(events, f.EventNumbers);
    }

    [Theory]
    [InlineData("GOOG", null, "tpm: {manufacturers: [IFX, goog]}", null)]
    [InlineData("IFX", null, "tpm: {manufacturers: [NTC, STM]}", "TPM manufacturer IFX is not allowed")]
    [InlineData("IFX", "7.85.4555", "tpm: {manufacturers: [IFX], minFirmwareVersion: '7.85'}", null)]
    [InlineData("IFX", "7.62", "tpm: {minFirmwareVersion: '7.85'}", "older than 7.85")]
    [InlineData("IFX", "7.x", "tpm: {minFirmwareVersion: '7.85'}", "not a dotted numeric version")]
    public void TPM_properties_from_the_caller(string manufacturer, string? firmware, string body, string? failure)
    {
        var properties = new Dictionary<string, string> { ["Manufacturer"] = manufacturer };
        if (firmware is not null)
        {
            properties["firmwareVersion"] = firmware;
        }
        var result = PolicyEvaluator.Evaluate(Policies.OneRule("name: tpm\n" + body), PolicyEvidence.CosClaims(properties));
        if (failure is null)
        {
            Assert.True(result.Compliant, string.Join("\n", result.Failures));
            return;
        }
        Assert.Contains(failure, Assert.Single(result.Failures).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_test_quote_signs_a_firmware_version_the_tpm_rule_reads()
    {
        var claims = PolicyEvidence.LogClaims(PolicyEvidence.SecureBootOffLog);
        Assert.Equal("7.85.0.0", claims.TpmFirmwareVersion);
        Assert.True(PolicyEvaluator.Evaluate(Policies.OneRule("name: fw\ntpm: {minFirmwareVersion: '7.85'}"), claims).Compliant);
        Assert.False(PolicyEvaluator.Evaluate(Policies.OneRule("name: fw\ntpm: {minFirmwareVersion: '7.86'}"), claims).Compliant);
    }

    [Fact]
    public void Claims_come_only_from_verified_PCRs_and_say_what_did_not_verify()
    {
        var claims = PolicyEvidence.CosClaims();

        Assert.Equal([10], claims.UnverifiedPcrs.Keys);
        Assert.DoesNotContain(claims.Events, e => e.Pcr == 10);
        Assert.Equal("GCE Virtual Firmware v1", Assert.Single(claims.ScrtmVersion).Version);
        Assert.Equal([22, 23, 40], claims.BootApplications.Select(a => a.EventNumber));
        Assert.EndsWith("\\EFI\\BOOT\\BOOTX64.EFI", claims.BootApplications[0].DevicePath, StringComparison.Ordinal);
        Assert.Equal(4, claims.Dbx.Single().Certificates.Count);
        var json = claims.ToJson();
        Assert.True(claims.SecureBootEnabled);
        Assert.True(json["secureboot.enabled"]!.GetValue<bool>());
        Assert.Equal(3, json["secureboot.variable"]![0]!["event"]!.GetValue<int>());
        Assert.Single(claims.Db);
        Assert.False(PolicyEvidence.LogClaims(PolicyEvidence.SecureBootOffLog).SecureBootEnabled);
        Assert.Equal(claims.Events.Count, json["events"]!.AsArray().Count);
    }

    [Fact]
    public void A_verification_from_another_quote_is_refused()
    {
        var log = EventLogParser.Parse(Fixtures.Bytes(PolicyEvidence.SecureBootOffLog));
        var mine = SoftwareQuote.OfReplayWithTestAk(log);
        var other = SoftwareQuote.OfReplayWithTestAk(EventLogParser.Parse(Fixtures.Bytes(PolicyEvidence.ArchLinuxLog)));

        Assert.Throws<ArgumentException>(() => PolicyClaims.From(EventLogVerifier.Verify(log, mine), other, null));
    }

    private static string App(int number) => PolicyEvidence.CosClaims().BootApplications.Single(a => a.EventNumber == number).Digests[TpmAlgId.Sha256];

    private static string Sha1Of(int number) => PolicyEvidence.CosClaims().Events.Single(e => e.Number == number).Digests[TpmAlgId.Sha1];
}

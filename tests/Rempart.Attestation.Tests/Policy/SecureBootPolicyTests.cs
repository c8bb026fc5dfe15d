using Rempart.Attestation.Policy;

namespace Rempart.Attestation.Tests.Policy;

/// <summary>Secure Boot required, on real evidence: a real quote with SecureBoot=1, a log with SecureBoot=0.</summary>
public sealed class SecureBootPolicyTests
{
    private const string Required = """
        id: secure-boot-only
        version: 3
        mode: enforce
        rules:
          - name: secure-boot
            description: Secure Boot must be on
            secureBoot:
              required: true
        """;

    [Fact]
    public void Passes_on_the_COS_attestation_whose_verified_SecureBoot_variable_is_1()
    {
        var claims = PolicyEvidence.CosClaims();
        var sb = Assert.Single(claims.SecureBoot);
        Assert.True(sb.Enabled);
        Assert.True(sb.DataVerified);
        Assert.Equal(3, sb.EventNumber);

        var result = PolicyEvaluator.Evaluate(Policies.Parse(Required), claims);

        Assert.True(result.Passed);
        Assert.True(result.Compliant);
        Assert.False(result.AuditOnly);
        Assert.Empty(result.Failures);
    }

    [Fact]
    public void Fails_on_a_SecureBoot_0_log_naming_the_rule_the_value_and_the_variable_event()
    {
        var claims = PolicyEvidence.LogClaims(PolicyEvidence.SecureBootOffLog);

        var result = PolicyEvaluator.Evaluate(Policies.Parse(Required), claims);

        Assert.False(result.Passed);
        var failure = Assert.Single(result.Failures);
        Assert.Equal("policy.rule.secure-boot", failure.Id);
        Assert.Equal("SecureBoot=1", failure.Expected);
        Assert.Contains("SecureBoot=0", failure.Actual, StringComparison.Ordinal);
        Assert.Contains("event #3", failure.Actual, StringComparison.Ordinal);
        // #3 is the EV_EFI_VARIABLE_DRIVER_CONFIG event for EFI_GLOBAL_VARIABLE:SecureBoot (PCR 7) in this log.
        Assert.Equal([3], failure.EventNumbers);
    }

    [Fact]
    public void Audit_mode_reports_the_failure_and_passes()
    {
        var audit = Policies.Parse(Required.Replace("mode: enforce", "mode: audit", StringComparison.Ordinal));
        var result = PolicyEvaluator.Evaluate(audit, PolicyEvidence.LogClaims(PolicyEvidence.SecureBootOffLog));

        Assert.True(result.Passed);
        Assert.True(result.AuditOnly);
        Assert.False(result.Compliant);
        Assert.Equal("policy.rule.secure-boot", Assert.Single(result.Failures).Id);
        Assert.Equal(PolicyMode.Audit, result.Mode);
    }

    [Fact]
    public void An_empty_SecureBoot_variable_is_off()
    {
        // Arch Linux workstation: the SecureBoot variable is measured with 0 bytes of data (event 3).
        var result = PolicyEvaluator.Evaluate(Policies.Parse(Required), PolicyEvidence.LogClaims(PolicyEvidence.ArchLinuxLog));

        var failure = Assert.Single(result.Failures);
        Assert.Contains("SecureBoot=(empty)", failure.Actual, StringComparison.Ordinal);
        Assert.Equal([3], failure.EventNumbers);
    }

    [Theory]
    [MemberData(nameof(DatabaseCases))]
    public void Database_constraints(string name, string body, string? failureContains)
    {
        var result = PolicyEvaluator.Evaluate(Policies.OneRule($"name: {name}\nsecureBoot:\n{body}"), PolicyEvidence.CosClaims());
        if (failureContains is null)
        {
            Assert.True(result.Compliant, string.Join("\n", result.Failures));
            return;
        }
        var failure = Assert.Single(result.Failures);
        Assert.Equal($"policy.rule.{name}", failure.Id);
        Assert.Contains(failureContains, failure.Actual, StringComparison.Ordinal);
    }

    // COS 85 (SOURCES.md, rempart eventlog show): db (#6) holds one certificate, "UEFI DB Key v10",
    // whose SHA-256 fingerprint starts a7b8c851deb2acba; dbx (#7) holds four certificates.
    public static TheoryData<string, string, string?> DatabaseCases()
    {
        var claims = PolicyEvidence.CosClaims();
        string db = Assert.Single(claims.Databases["db"]).Certificates.Single().Sha256;
        string dbx = claims.Databases["dbx"].Single().Certificates[0].Sha256;
        string other = new('a', 64);
        Assert.StartsWith("a7b8c851deb2acba", db, StringComparison.Ordinal);
        return new()
        {
            { "db-only-passes", $"  db:\n    only: [\"{db}\"]", null },
            { "db-only-fails", $"  db:\n    only: [\"{other}\"]", "also contains certificate 'CN=UEFI DB Key v10" },
            { "dbx-must-contain-passes", $"  required: true\n  dbx:\n    mustContain: [\"{dbx}\"]", null },
            { "dbx-must-contain-fails", $"  dbx:\n    mustContain: [\"{other}\"]", $"lacks {other}" },
            { "db-must-not-contain-fails", $"  db:\n    mustNotContain: [\"{db}\"]", $"contains {db}" },
            { "kek-must-contain-fails", $"  kek:\n    mustContain: [\"{other}\"]", "KEK (event #5" },
        };
    }
}

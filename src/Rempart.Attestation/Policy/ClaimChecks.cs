using Rempart.Tpm;

namespace Rempart.Attestation.Policy;

/// <summary>Evaluation of the <c>pcr</c>, <c>secureBoot</c>, <c>kernelCmdline</c> and <c>tpm</c> rules.</summary>
internal static class ClaimChecks
{
    public static RuleFailure? Pcr(PcrRule rule, PolicyClaims claims)
    {
        string name = $"{TpmHash.ToName(rule.Bank)}:{rule.Index}";
        string expected = rule.Match switch
        {
            PcrMatch.Equals => $"{name} = {rule.Values[0]}",
            PcrMatch.In => $"{name} one of [{PolicyValues.List(rule.Values, 10, ", ")}]",
            _ => $"{name} none of [{PolicyValues.List(rule.Values, 10, ", ")}]",
        };
        if (!claims.Pcrs.TryGetValue(rule.Bank, out var bank) || !bank.TryGetValue(rule.Index, out var value))
        {
            return PolicyEvaluator.Fail(rule, $"PCR {name} is not in the quote", expected, $"{name} not quoted");
        }
        string hex = Convert.ToHexStringLower(value);
        bool listed = rule.Values.Contains(hex, StringComparer.Ordinal);
        if (listed == (rule.Match != PcrMatch.NotIn))
        {
            return null;
        }
        var events = claims.Events.Where(e => e.Pcr == rule.Index).ToList();
        string extended = claims.UnverifiedPcrs.TryGetValue(rule.Index, out var why)
            ? $"; the log does not replay to it ({why})"
            : events.Count == 0 ? "; no event extends it"
            : $"; extended by {PolicyValues.List(events.Select(e => $"#{e.Number} {e.TypeName}").ToList(), 12, ", ")}";
        return PolicyEvaluator.Fail(rule, $"PCR {name} is {hex}, {(rule.Match == PcrMatch.NotIn ? "a forbidden value" : "not the expected value")}",
            expected, $"{name} = {hex}{extended}", events.Select(e => e.Number));
    }

    public static RuleFailure? SecureBoot(SecureBootRule rule, PolicyClaims claims)
    {
        if (PolicyEvaluator.Scope(rule, claims, 7, existential: false) is { } scope)
        {
            return scope;
        }
        var problems = new List<(string Message, string Expected, string Actual, IEnumerable<int> Events)>();
        if (rule.Required)
        {
            var sb = claims.SecureBoot;
            if (sb.Count == 0)
            {
                problems.Add(("no verified event measures the SecureBoot variable", "SecureBoot=1", "no SecureBoot variable event in PCR 7", []));
            }
            else if (sb.Where(s => !s.DataVerified).ToList() is { Count: > 0 } uncovered)
            {
                problems.Add(("the SecureBoot variable event's digest does not cover its data", "SecureBoot=1 in data covered by the digest",
                    string.Join("; ", uncovered.Select(s => $"{s.Describe()} in event #{s.EventNumber}, not covered by its digest")), uncovered.Select(s => s.EventNumber)));
            }
            else if (sb.Where(s => !s.Enabled).ToList() is { Count: > 0 } off)
            {
                problems.Add(("Secure Boot is off", "SecureBoot=1",
                    string.Join("; ", off.Select(s => $"{s.Describe()} (event #{s.EventNumber}, EV_EFI_VARIABLE_DRIVER_CONFIG, PCR 7)")), off.Select(s => s.EventNumber)));
            }
        }
        foreach (var (variable, constraint) in rule.Databases)
        {
            if (Database(variable, constraint, claims) is { } problem)
            {
                problems.Add(problem);
            }
        }
        return problems.Count == 0 ? null : PolicyEvaluator.Fail(rule,
            string.Join("; ", problems.Select(p => p.Message)),
            string.Join("; ", problems.Select(p => p.Expected)),
            string.Join("; ", problems.Select(p => p.Actual)),
            problems.SelectMany(p => p.Events));
    }

    private static (string, string, string, IEnumerable<int>)? Database(string variable, DatabaseConstraint c, PolicyClaims claims)
    {
        var expected = new List<string>();
        if (c.MustContain is not null)
        {
            expected.Add($"{variable} containing {PolicyValues.List(c.MustContain, 5, ", ")}");
        }
        if (c.MustNotContain is not null)
        {
            expected.Add($"{variable} containing none of {PolicyValues.List(c.MustNotContain, 5, ", ")}");
        }
        if (c.Only is not null)
        {
            expected.Add($"{variable} containing only {PolicyValues.List(c.Only, 5, ", ")}");
        }
        string expect = string.Join(", ", expected);
        if (!claims.Databases.TryGetValue(variable, out var measured) || measured.Count == 0)
        {
            return ($"no verified event measures {variable}", expect, $"{variable} not measured in PCR 7", []);
        }
        if (measured.Where(d => !d.DataVerified).ToList() is { Count: > 0 } uncovered)
        {
            return ($"the digest of the {variable} event does not cover its data", expect,
                string.Join("; ", uncovered.Select(d => $"event #{d.EventNumber}: not covered by its digest")), uncovered.Select(d => d.EventNumber));
        }
        var actual = new List<string>();
        foreach (var db in measured)
        {
            var entries = db.Entries.ToHashSet(StringComparer.Ordinal);
            var missing = c.MustContain?.Where(h => !entries.Contains(h)).ToList() ?? [];
            var forbidden = c.MustNotContain?.Where(entries.Contains).ToList() ?? [];
            var extra = c.Only is null ? [] : db.Certificates.Where(x => !c.Only.Contains(x.Sha256)).Select(x => $"certificate '{x.Subject}' sha256 {x.Sha256}")
                .Concat(db.Hashes.Where(h => !c.Only.Contains(h)).Select(h => $"hash {h}"))
                .Concat(db.OtherEntries.Select(o => $"entry {o}")).ToList();
            if (missing.Count > 0)
            {
                actual.Add($"{variable} (event #{db.EventNumber}, {db.Certificates.Count} certificates, {db.Hashes.Count} hashes) lacks {PolicyValues.List(missing, 5, ", ")}");
            }
            if (forbidden.Count > 0)
            {
                actual.Add($"{variable} (event #{db.EventNumber}) contains {PolicyValues.List(forbidden, 5, ", ")}");
            }
            if (extra.Count > 0)
            {
                actual.Add($"{variable} (event #{db.EventNumber}) also contains {PolicyValues.List(extra, 5, ", ")}");
            }
        }
        return actual.Count == 0 ? null
            : ($"{variable} does not have the required content", expect, string.Join("; ", actual), measured.Select(d => d.EventNumber));
    }

    public static RuleFailure? KernelCmdline(KernelCmdlineRule rule, PolicyClaims claims)
    {
        foreach (int pcr in new[] { 8, 12 })
        {
            if (claims.UnverifiedPcrs.ContainsKey(pcr))
            {
                return PolicyEvaluator.Scope(rule, claims, pcr, existential: false);
            }
        }
        string expected = Expected(rule);
        var texts = claims.KernelCmdline.Where(c => c.Text is not null).ToList();
        if (texts.Count == 0)
        {
            var digestOnly = claims.KernelCmdline.ToList();
            return PolicyEvaluator.Fail(rule, digestOnly.Count > 0
                    ? "the kernel command line is measured only as a digest (LOADED_IMAGE::LoadOptions): its text is not in the log"
                    : "no verified event measures a kernel command line (GRUB kernel_cmdline in PCR 8, systemd-boot/stub in PCR 8 or 12)",
                expected, digestOnly.Count > 0 ? string.Join("; ", digestOnly.Select(c => $"event #{c.EventNumber}: {c.Source}")) : "none",
                digestOnly.Select(c => c.EventNumber));
        }
        if (texts.Where(c => !c.DataVerified).ToList() is { Count: > 0 } uncovered)
        {
            return PolicyEvaluator.Fail(rule, "the kernel command line event's digest does not cover its data: the text is not evidence",
                $"{expected}, in data covered by the digest",
                string.Join("; ", uncovered.Select(c => $"event #{c.EventNumber} (EV_IPL, PCR {c.Pcr}) says '{PolicyValues.Short(c.Text!)}' but its digest is not the hash of it")),
                uncovered.Select(c => c.EventNumber));
        }
        var bad = new List<(KernelCmdlineClaim Claim, string Why)>();
        foreach (var c in texts)
        {
            var parameters = PolicyValues.Parameters(c.Text!);
            var why = new List<string>();
            if (rule.EqualTo is not null && EqualityDifference(PolicyValues.Parameters(rule.EqualTo), parameters) is { } difference)
            {
                why.Add($"is not equal ({difference})");
            }
            if (rule.Matches is not null)
            {
                bool? m = PolicyRegex.IsMatch(rule.Matches, c.Text!.Trim());
                if (m is null)
                {
                    return PolicyEvaluator.Fail(rule, PolicyRegex.TimedOut(rule.Matches), expected, $"event #{c.EventNumber}: '{PolicyValues.Short(c.Text!)}'", [c.EventNumber]);
                }
                if (m == false)
                {
                    why.Add($"does not match /{rule.Matches}/");
                }
            }
            if (rule.MustContain?.Where(p => !parameters.Any(x => PolicyValues.NamesParameter(p, x))).ToList() is { Count: > 0 } missing)
            {
                why.Add($"lacks {string.Join(", ", missing)}");
            }
            if (rule.MustNotContain?.SelectMany(p => parameters.Where(x => PolicyValues.NamesParameter(p, x))).ToList() is { Count: > 0 } forbidden)
            {
                why.Add($"contains {string.Join(", ", forbidden)}");
            }
            if (why.Count > 0)
            {
                bad.Add((c, string.Join(", ", why)));
            }
        }
        return bad.Count == 0 ? null : PolicyEvaluator.Fail(rule,
            $"{bad.Count} of {texts.Count} measured kernel command lines do not meet the rule",
            expected,
            string.Join("; ", bad.Select(b => $"event #{b.Claim.EventNumber} (PCR {b.Claim.Pcr}) '{PolicyValues.Short(b.Claim.Text!)}' {b.Why}")),
            bad.Select(b => b.Claim.EventNumber));
    }

    /// <summary>How two parameter lists differ, or null when they are the same.</summary>
    private static string? EqualityDifference(List<string> expected, List<string> actual)
    {
        if (expected.SequenceEqual(actual, StringComparer.Ordinal))
        {
            return null;
        }
        var missing = expected.Except(actual, StringComparer.Ordinal).ToList();
        var extra = actual.Except(expected, StringComparer.Ordinal).ToList();
        var parts = new List<string>();
        if (missing.Count > 0)
        {
            parts.Add($"lacks {PolicyValues.List(missing, 5, ", ")}");
        }
        if (extra.Count > 0)
        {
            parts.Add($"has in addition {PolicyValues.List(extra, 5, ", ")}");
        }
        return parts.Count > 0 ? string.Join("; ", parts) : "the same parameters in another order or number";
    }

    private static string Expected(KernelCmdlineRule rule)
    {
        var parts = new List<string>();
        if (rule.EqualTo is not null)
        {
            parts.Add($"equal to '{PolicyValues.Short(rule.EqualTo)}'");
        }
        if (rule.Matches is not null)
        {
            parts.Add($"matching /{rule.Matches}/");
        }
        if (rule.MustContain is not null)
        {
            parts.Add($"containing {string.Join(", ", rule.MustContain)}");
        }
        if (rule.MustNotContain is not null)
        {
            parts.Add($"containing none of {string.Join(", ", rule.MustNotContain)}");
        }
        return "a kernel command line " + string.Join(", ", parts);
    }

    public static RuleFailure? Tpm(TpmRule rule, PolicyClaims claims)
    {
        var problems = new List<(string Message, string Expected, string Actual)>();
        if (rule.Manufacturers is { } list)
        {
            string expected = $"manufacturer one of {string.Join(", ", list)}";
            string? m = claims.TpmManufacturer?.Trim();
            if (m is null)
            {
                problems.Add(("the TPM manufacturer is not known (not among the TPM properties given)", expected, "no manufacturer"));
            }
            else if (!list.Any(x => string.Equals(x.Trim(), m, StringComparison.OrdinalIgnoreCase)))
            {
                problems.Add(($"TPM manufacturer {m} is not allowed", expected, $"manufacturer {m}"));
            }
        }
        if (rule.MinFirmwareVersion is { } min)
        {
            string expected = $"firmware version ≥ {min}";
            string? v = claims.TpmFirmwareVersion;
            int? cmp = v is null ? null : PolicyValues.CompareVersions(v, min);
            if (v is null)
            {
                problems.Add(("the TPM firmware version is not known", expected, "no firmware version"));
            }
            else if (cmp is null)
            {
                problems.Add(($"TPM firmware version '{v}' is not a dotted numeric version", expected, $"firmware version '{v}'"));
            }
            else if (cmp < 0)
            {
                problems.Add(($"TPM firmware version {v} is older than {min}", expected, $"firmware version {v}"));
            }
        }
        return problems.Count == 0 ? null : PolicyEvaluator.Fail(rule,
            string.Join("; ", problems.Select(p => p.Message)),
            string.Join("; ", problems.Select(p => p.Expected)),
            string.Join("; ", problems.Select(p => p.Actual)));
    }
}

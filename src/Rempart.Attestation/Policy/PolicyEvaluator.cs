using System.Text.Json.Nodes;

namespace Rempart.Attestation.Policy;

/// <summary>
/// A refused rule: its stable id (<c>policy.rule.&lt;name&gt;</c>), what went wrong, the expectation
/// next to the evidence, and the numbers of the events involved.
/// </summary>
public sealed record RuleFailure(string Id, string Message, string Expected, string Actual, IReadOnlyList<int> EventNumbers)
{
    public JsonObject ToJson() => new()
    {
        ["id"] = Id,
        ["message"] = Message,
        ["expected"] = Expected,
        ["actual"] = Actual,
        ["events"] = new JsonArray([.. EventNumbers.Select(n => (JsonNode)n)]),
    };

    public override string ToString() => $"{Id}: {Message} (expected {Expected}; actual {Actual})";
}

/// <summary>
/// The outcome of a policy on one attestation. <see cref="Passed"/> is what the Guardian acts on:
/// true when no rule failed, and always true in audit mode (<see cref="AuditOnly"/>), where the
/// failures are still all reported. <see cref="Compliant"/> says whether the evidence met every
/// rule, whatever the mode: the "what would fail?" answer.
/// </summary>
public sealed record PolicyResult(string PolicyId, int PolicyVersion, PolicyMode Mode, bool Passed, bool AuditOnly, IReadOnlyList<RuleFailure> Failures)
{
    public bool Compliant => Failures.Count == 0;

    public JsonObject ToJson() => new()
    {
        ["policy"] = PolicyId,
        ["version"] = PolicyVersion,
        ["mode"] = Mode == PolicyMode.Audit ? "audit" : "enforce",
        ["passed"] = Passed,
        ["auditOnly"] = AuditOnly,
        ["compliant"] = Compliant,
        ["failures"] = new JsonArray([.. Failures.Select(f => (JsonNode)f.ToJson())]),
    };
}

/// <summary>
/// Evaluates a parsed policy against claims. Pure and total: it never throws for a document that
/// parsed; every rule is evaluated (a failure does not hide the next), and anything that cannot be
/// decided — data a digest does not cover, a PCR that did not verify, a regex that timed out — is
/// a failure of the rule that needed it (fail closed).
/// </summary>
public static class PolicyEvaluator
{
    public static PolicyResult Evaluate(PolicyDocument document, PolicyClaims claims)
    {
        ArgumentNullException.ThrowIfNull(document);
        ArgumentNullException.ThrowIfNull(claims);
        var failures = new List<RuleFailure>();
        foreach (var rule in document.Rules)
        {
            if (Check(rule, claims) is { } failure)
            {
                failures.Add(failure);
            }
        }
        bool audit = document.Mode == PolicyMode.Audit;
        return new PolicyResult(document.Id, document.Version, document.Mode, failures.Count == 0 || audit, audit, failures);
    }

    private static RuleFailure? Check(PolicyRule rule, PolicyClaims claims)
    {
        try
        {
            return rule switch
            {
                PcrRule r => ClaimChecks.Pcr(r, claims),
                EventsRule r => EventChecks.Events(r, claims),
                DigestsRule r => EventChecks.Digests(r, claims),
                SecureBootRule r => ClaimChecks.SecureBoot(r, claims),
                KernelCmdlineRule r => ClaimChecks.KernelCmdline(r, claims),
                TpmRule r => ClaimChecks.Tpm(r, claims),
                _ => Fail(rule, $"rule kind {rule.Kind} is not evaluated by this version", "a known rule kind", rule.Kind),
            };
        }
#pragma warning disable CA1031 // A defect in one rule must refuse that rule, not crash the Guardian's attestation.
        catch (Exception e) when (e is not OutOfMemoryException)
#pragma warning restore CA1031
        {
            return Fail(rule, $"the rule could not be evaluated ({e.GetType().Name}: {e.Message}); refused (fail closed)", "an evaluable rule", "an internal error");
        }
    }

    internal static RuleFailure Fail(PolicyRule rule, string message, string expected, string actual, IEnumerable<int>? events = null) =>
        new(rule.Id, message, expected, actual, [.. (events ?? []).Distinct().Order()]);

    /// <summary>
    /// Whether the events a rule reads are all evidence: the PCR it names must be quoted and have
    /// replayed; with no PCR named, a rule that is not a plain "at least one" needs every quoted
    /// PCR to have replayed (else events it should see, or must not see, may be missing).
    /// </summary>
    internal static RuleFailure? Scope(PolicyRule rule, PolicyClaims claims, int? pcr, bool existential)
    {
        if (pcr is { } p)
        {
            if (!claims.IsQuoted(p))
            {
                return Fail(rule, $"PCR {p} is not in the quote, so none of its events is evidence",
                    $"PCR {p} quoted and its log replayed", $"PCR {p} not quoted");
            }
            if (claims.UnverifiedPcrs.TryGetValue(p, out var why))
            {
                return Fail(rule, $"PCR {p} does not replay to the quoted value, so none of its events is evidence",
                    $"PCR {p} replays to the quoted value", why);
            }
            return null;
        }
        if (!existential && claims.UnverifiedPcrs.Count > 0)
        {
            var pcrs = string.Join(", ", claims.UnverifiedPcrs.Keys.Order());
            return Fail(rule, $"PCRs {pcrs} do not replay to the quoted values, so events this rule must see may be missing; name the PCR in select.pcr",
                "every quoted PCR replays (or select.pcr set to a PCR that does)", PolicyValues.List([.. claims.UnverifiedPcrs.OrderBy(p => p.Key).Select(p => p.Value)]));
        }
        return null;
    }
}

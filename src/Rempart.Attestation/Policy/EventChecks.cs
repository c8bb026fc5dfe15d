using System.Text.Json.Nodes;
using Rempart.Attestation.Decoding;
using Rempart.Attestation.EventLog;
using Rempart.Tpm;

namespace Rempart.Attestation.Policy;

/// <summary>Evaluation of the <c>events</c> and <c>digests</c> rules: selection, field values, operators.</summary>
internal static class EventChecks
{
    private static readonly HashSet<TcgEventType> VariableTypes =
    [
        TcgEventType.EfiVariableDriverConfig, TcgEventType.EfiVariableBoot, TcgEventType.EfiVariableBoot2, TcgEventType.EfiVariableAuthority,
    ];

    private static readonly HashSet<TcgEventType> PathTypes =
    [
        TcgEventType.EfiBootServicesApplication, TcgEventType.EfiBootServicesDriver, TcgEventType.EfiRuntimeServicesDriver,
        TcgEventType.EfiVariableBoot, TcgEventType.EfiVariableBoot2,
    ];

    /// <summary>The selected events, or the failure that makes selecting them impossible.</summary>
    private sealed record Selection(List<ClaimEvent>? Events, RuleFailure? Failure);

    public static RuleFailure? Events(EventsRule rule, PolicyClaims claims)
    {
        var c = rule.Condition;
        if (PolicyEvaluator.Scope(rule, claims, rule.Select.Pcr, c.Operator == ConditionOperator.Any) is { } scope)
        {
            return scope;
        }
        var (selected, failure) = Select(rule, claims, rule.Select, c.ReadsData);
        if (failure is not null)
        {
            return failure;
        }
        string selector = Describe(rule.Select);
        string expected = Expected(c);
        switch (c.Operator)
        {
            case ConditionOperator.Any:
                return selected!.Count > 0 ? null : PolicyEvaluator.Fail(rule, $"no verified event matches {selector}",
                    $"at least one event matching {selector}", "none");
            case ConditionOperator.None:
                return selected!.Count == 0 ? null : PolicyEvaluator.Fail(rule, $"{selected.Count} verified events match {selector}",
                    $"no event matching {selector}", PolicyValues.List(selected.Select(Brief).ToList()), selected.Select(e => e.Number));
            case ConditionOperator.Absent when selected!.Count == 0:
                return null;
        }
        if (selected!.Count == 0)
        {
            return PolicyEvaluator.Fail(rule, $"no verified event matches {selector}, so the condition proves nothing",
                $"at least one event matching {selector}, each with {expected}", "none");
        }
        var bad = new List<(ClaimEvent Event, string Why)>();
        foreach (var e in selected)
        {
            var values = Field(e, c.Field!);
            string? why = Violation(c, values, out bool timedOut);
            if (timedOut)
            {
                return PolicyEvaluator.Fail(rule, PolicyRegex.TimedOut(c.Pattern!), expected, $"#{e.Number} {c.Field}={Show(values)}", [e.Number]);
            }
            if (why is not null)
            {
                bad.Add((e, why));
            }
        }
        return bad.Count == 0 ? null : PolicyEvaluator.Fail(rule,
            $"{bad.Count} of {selected.Count} events matching {selector} do not have {expected}",
            $"{expected} for every event matching {selector}",
            PolicyValues.List(bad.Select(b => $"#{b.Event.Number} ({b.Event.TypeName}, PCR {b.Event.Pcr}) {c.Field}: {b.Why}").ToList()),
            bad.Select(b => b.Event.Number));
    }

    public static RuleFailure? Digests(DigestsRule rule, PolicyClaims claims)
    {
        if (PolicyEvaluator.Scope(rule, claims, rule.Select.Pcr, existential: false) is { } scope)
        {
            return scope;
        }
        var (selected, failure) = Select(rule, claims, rule.Select, readsData: false);
        if (failure is not null)
        {
            return failure;
        }
        string bank = TpmHash.ToName(rule.Bank);
        string selector = Describe(rule.Select);
        if (rule.Allow is not null && selected!.Count == 0)
        {
            return PolicyEvaluator.Fail(rule, $"no verified event matches {selector}, so the allow list proves nothing",
                $"at least one event matching {selector}, each with an allowed {bank} digest", "none");
        }
        var allow = rule.Allow?.ToHashSet(StringComparer.Ordinal);
        var deny = rule.Deny?.ToHashSet(StringComparer.Ordinal);
        var notAllowed = new List<ClaimEvent>();
        var denied = new List<ClaimEvent>();
        foreach (var e in selected!)
        {
            string? digest = e.Digests.GetValueOrDefault(rule.Bank);
            if (allow is not null && (digest is null || !allow.Contains(digest)))
            {
                notAllowed.Add(e);
            }
            if (deny is not null && digest is not null && deny.Contains(digest))
            {
                denied.Add(e);
            }
        }
        if (notAllowed.Count == 0 && denied.Count == 0)
        {
            return null;
        }
        var messages = new List<string>();
        var expected = new List<string>();
        if (notAllowed.Count > 0)
        {
            messages.Add($"{notAllowed.Count} of {selected!.Count} events matching {selector} have a {bank} digest not in the allow list");
            expected.Add($"every {bank} digest among the {rule.Allow!.Count} allowed");
        }
        if (denied.Count > 0)
        {
            messages.Add($"{denied.Count} events matching {selector} have a denied {bank} digest");
            expected.Add($"no {bank} digest among the {rule.Deny!.Count} denied");
        }
        var involved = notAllowed.Concat(denied).Distinct().OrderBy(e => e.Number).ToList();
        return PolicyEvaluator.Fail(rule, string.Join("; ", messages), string.Join("; ", expected),
            PolicyValues.List(involved.Select(e => DigestOf(e, rule.Bank)).ToList()), involved.Select(e => e.Number));
    }

    /// <summary>
    /// Selects events: by PCR, type and digest (bound by replay), then by variable and path (decoded
    /// data). When the selector or the condition reads data, every candidate whose data is not
    /// covered by its digest, or does not decode, refuses the rule: it could hide from, or forge
    /// its way into, the selection.
    /// </summary>
    private static Selection Select(PolicyRule rule, PolicyClaims claims, EventSelector s, bool readsData)
    {
        var candidates = claims.Events.Where(e =>
            (s.Pcr is null || e.Pcr == s.Pcr) &&
            (s.Type is null || e.Type == s.Type) &&
            (s.Digest is null || e.Digests.Values.Contains(s.Digest, StringComparer.Ordinal)) &&
            (s.Variable is null || VariableTypes.Contains(e.Type)) &&
            ((s.Path is null && s.PathMatches is null) || PathTypes.Contains(e.Type))).ToList();
        if (s.ReadsData || readsData)
        {
            var unusable = candidates.Where(e => !e.DataVerified || e.Data is DecodeError).ToList();
            if (unusable.Count > 0)
            {
                return new(null, PolicyEvaluator.Fail(rule,
                    "the rule reads decoded event data, and the digest of these events does not cover their data (or it does not decode): it is not evidence",
                    "event data covered by the event's digest",
                    PolicyValues.List(unusable.Select(e => e.Data is DecodeError d && e.DataVerified
                        ? $"event #{e.Number} ({e.TypeName}, PCR {e.Pcr}): {d.Message}"
                        : $"{e.UncoveredReason}; it says: {PolicyValues.Short(e.Data.ToString())}").ToList()),
                    unusable.Select(e => e.Number)));
            }
        }
        var selected = new List<ClaimEvent>();
        foreach (var e in candidates)
        {
            if (s.Variable is not null && !IsVariable(e, s.Variable))
            {
                continue;
            }
            string? path = DevicePath(e);
            if (s.Path is not null && (path is null || !path.Contains(s.Path, StringComparison.OrdinalIgnoreCase)))
            {
                continue;
            }
            if (s.PathMatches is not null)
            {
                bool? m = path is null ? false : PolicyRegex.IsMatch(s.PathMatches, path);
                if (m is null)
                {
                    return new(null, PolicyEvaluator.Fail(rule, PolicyRegex.TimedOut(s.PathMatches), $"path matching /{s.PathMatches}/",
                        $"#{e.Number} path '{PolicyValues.Short(path!)}'", [e.Number]));
                }
                if (m == false)
                {
                    continue;
                }
            }
            selected.Add(e);
        }
        return new(selected, null);
    }

    /// <summary>"SecureBoot" names the variable under any vendor; "GUID:name" or "VENDOR_NAME:name" one vendor's.</summary>
    private static bool IsVariable(ClaimEvent e, string selector)
    {
        if (e.Data is not UefiVariableData v)
        {
            return false;
        }
        int colon = selector.LastIndexOf(':');
        if (colon < 0)
        {
            return v.UnicodeName == selector;
        }
        string vendor = selector[..colon];
        bool vendorMatches = Guid.TryParse(vendor, out var g) ? g == v.VariableName : UefiGuids.Name(v.VariableName) == vendor;
        return vendorMatches && v.UnicodeName == selector[(colon + 1)..];
    }

    private static string? DevicePath(ClaimEvent e) => e.Data switch
    {
        ImageLoadEvent i => i.DevicePath,
        UefiVariableData { Value: LoadOptionValue o } => o.DevicePath,
        _ => null,
    };

    /// <summary>
    /// The values of a field of an event: number, pcr, type, digest.&lt;bank&gt;, or data.&lt;key&gt;…
    /// walked through the decoded data's JSON, lists flattened, nulls absent.
    /// </summary>
    internal static List<FieldValue> Field(ClaimEvent e, string field)
    {
        switch (field)
        {
            case "number":
                return [new FieldValue(e.Number.ToString(System.Globalization.CultureInfo.InvariantCulture), FieldKind.Number)];
            case "pcr":
                return [new FieldValue(e.Pcr.ToString(System.Globalization.CultureInfo.InvariantCulture), FieldKind.Number)];
            case "type":
                return [new FieldValue(e.TypeName, FieldKind.String)];
        }
        if (field.StartsWith("digest.", StringComparison.Ordinal))
        {
            return TpmHash.TryParse(field[7..], out var bank) && e.Digests.TryGetValue(bank, out var hex) ? [new FieldValue(hex, FieldKind.String)] : [];
        }
        IEnumerable<JsonNode> current = [e.DataJson];
        foreach (var key in field.Split('.').Skip(1))
        {
            current = current.SelectMany(Flatten).OfType<JsonObject>()
                .Select(o => o.TryGetPropertyValue(key, out var child) ? child : null)
                .OfType<JsonNode>();
        }
        return [.. current.SelectMany(Flatten).Select(PolicyValues.FromJson).OfType<FieldValue>()];
    }

    private static IEnumerable<JsonNode> Flatten(JsonNode node) =>
        node is JsonArray a ? a.OfType<JsonNode>().SelectMany(Flatten) : [node];

    /// <summary>Why an event's values break the condition, or null when they meet it.</summary>
    private static string? Violation(EventCondition c, List<FieldValue> values, out bool timedOut)
    {
        timedOut = false;
        switch (c.Operator)
        {
            case ConditionOperator.Exists:
                return values.Count > 0 ? null : "absent";
            case ConditionOperator.Absent:
                return values.Count == 0 ? null : $"present: {Show(values)}";
            case ConditionOperator.Subset:
                var outside = values.Where(v => !c.Values!.Any(o => PolicyValues.Same(v, o))).ToList();
                return outside.Count == 0 ? null : $"not in the list: {Show(outside)}";
        }
        if (values.Count != 1)
        {
            return values.Count == 0 ? "absent" : $"{values.Count} values ({Show(values)}), where one is compared (use subset for a list)";
        }
        var v = values[0];
        bool ok;
        switch (c.Operator)
        {
            case ConditionOperator.Equal:
                ok = PolicyValues.Same(v, c.Value!);
                break;
            case ConditionOperator.NotEqual:
                ok = !PolicyValues.Same(v, c.Value!);
                break;
            case ConditionOperator.In:
                ok = c.Values!.Any(o => PolicyValues.Same(v, o));
                break;
            case ConditionOperator.NotIn:
                ok = !c.Values!.Any(o => PolicyValues.Same(v, o));
                break;
            case ConditionOperator.LessThan or ConditionOperator.GreaterThan:
                if (PolicyValues.Number(v) is not { } n)
                {
                    return $"{v} is not an integer";
                }
                var operand = PolicyValues.Integer(c.Value!.Text)!.Value;
                ok = c.Operator == ConditionOperator.LessThan ? n < operand : n > operand;
                break;
            case ConditionOperator.Matches:
                bool? m = PolicyRegex.IsMatch(c.Pattern!, v.Text);
                timedOut = m is null;
                ok = m == true;
                break;
            default:
                return $"operator {c.Operator} does not apply to a field";
        }
        return ok ? null : $"is {v}";
    }

    private static string Expected(EventCondition c) => c.Operator switch
    {
        ConditionOperator.Exists => $"{c.Field} present",
        ConditionOperator.Absent => $"{c.Field} absent",
        ConditionOperator.Equal => $"{c.Field} equal to {c.Value!.Text}",
        ConditionOperator.NotEqual => $"{c.Field} not equal to {c.Value!.Text}",
        ConditionOperator.LessThan => $"{c.Field} less than {c.Value!.Text}",
        ConditionOperator.GreaterThan => $"{c.Field} greater than {c.Value!.Text}",
        ConditionOperator.Matches => $"{c.Field} matching /{c.Pattern}/",
        ConditionOperator.In => $"{c.Field} in [{PolicyValues.List(c.Values!.Select(v => v.Text).ToList(), 10, ", ")}]",
        ConditionOperator.NotIn => $"{c.Field} not in [{PolicyValues.List(c.Values!.Select(v => v.Text).ToList(), 10, ", ")}]",
        ConditionOperator.Subset => $"every {c.Field} in [{PolicyValues.List(c.Values!.Select(v => v.Text).ToList(), 10, ", ")}]",
        _ => c.Operator.ToString(),
    };

    internal static string Describe(EventSelector s)
    {
        var parts = new List<string>();
        if (s.Pcr is { } p)
        {
            parts.Add($"pcr {p}");
        }
        if (s.Type is { } t)
        {
            parts.Add($"type {TcgEventTypeNames.Name(t)}");
        }
        if (s.Variable is not null)
        {
            parts.Add($"variable {s.Variable}");
        }
        if (s.Path is not null)
        {
            parts.Add($"path containing '{s.Path}'");
        }
        if (s.PathMatches is not null)
        {
            parts.Add($"path matching /{s.PathMatches}/");
        }
        if (s.Digest is not null)
        {
            parts.Add($"digest {s.Digest}");
        }
        return parts.Count == 0 ? "{any event}" : "{" + string.Join(", ", parts) + "}";
    }

    private static string Brief(ClaimEvent e) => $"#{e.Number} ({e.TypeName}, PCR {e.Pcr})";

    private static string Show(List<FieldValue> values) => values.Count == 0 ? "(absent)" : PolicyValues.List(values, 5, ", ");

    private static string DigestOf(ClaimEvent e, TpmAlgId bank)
    {
        string digest = e.Digests.TryGetValue(bank, out var d) ? $"{TpmHash.ToName(bank)}:{d}" : $"no {TpmHash.ToName(bank)} digest";
        string path = DevicePath(e) is { Length: > 0 } p ? $", path as logged (not covered by the digest): {PolicyValues.Short(p)}" : "";
        return $"#{e.Number} ({e.TypeName}, PCR {e.Pcr}) {digest}{path}";
    }
}

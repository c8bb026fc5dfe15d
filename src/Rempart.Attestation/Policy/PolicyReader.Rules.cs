using System.Text.RegularExpressions;
using Rempart.Attestation.EventLog;
using Rempart.Tpm;

namespace Rempart.Attestation.Policy;

internal sealed partial class PolicyReader
{
    internal static readonly IReadOnlyDictionary<string, ConditionOperator> Operators = new Dictionary<string, ConditionOperator>(StringComparer.Ordinal)
    {
        ["equal"] = ConditionOperator.Equal,
        ["notEqual"] = ConditionOperator.NotEqual,
        ["lessThan"] = ConditionOperator.LessThan,
        ["greaterThan"] = ConditionOperator.GreaterThan,
        ["any"] = ConditionOperator.Any,
        ["none"] = ConditionOperator.None,
        ["in"] = ConditionOperator.In,
        ["notIn"] = ConditionOperator.NotIn,
        ["exists"] = ConditionOperator.Exists,
        ["absent"] = ConditionOperator.Absent,
        ["matches"] = ConditionOperator.Matches,
        ["subset"] = ConditionOperator.Subset,
    };

    [GeneratedRegex(@"\A(number|pcr|type|digest\.(sha1|sha256|sha384|sha512)|data(\.[A-Za-z0-9_]+)*)\z")]
    private static partial Regex FieldSyntax();

    [GeneratedRegex(@"\A[0-9]+(\.[0-9]+){0,7}\z")]
    private static partial Regex VersionSyntax();

    private static readonly Dictionary<string, TcgEventType> EventTypesByName = Enum.GetValues<TcgEventType>()
        .ToDictionary(TcgEventTypeNames.Name, t => t, StringComparer.Ordinal);

    private PcrRule? ReadPcr(YNode node, string path, string? name, string? description)
    {
        if (Map(node, path) is not { } m)
        {
            return null;
        }
        Keys(m, path, ["bank", "index", "equals", "in", "notIn"]);
        var bank = Required(m, "bank", path) is { } b ? Bank(b, path + ".bank") : null;
        int? index = Required(m, "index", path) is { } i ? Int(i, path + ".index", 0, 23) : null;
        var matches = new[] { ("equals", PcrMatch.Equals), ("in", PcrMatch.In), ("notIn", PcrMatch.NotIn) }.Where(x => m.Get(x.Item1) is not null).ToList();
        if (matches.Count != 1)
        {
            Error(m, path, matches.Count == 0 ? "a pcr rule needs one of: equals, in, notIn" : "a pcr rule has exactly one of equals, in, notIn");
            return null;
        }
        if (bank is not { } alg || index is null)
        {
            return null;
        }
        var (key, match) = matches[0];
        var valueNode = m.Get(key)!;
        int size = TpmHash.DigestSize(alg);
        List<string>? values = match == PcrMatch.Equals
            ? Hex(valueNode, $"{path}.{key}", size) is { } h ? [h] : null
            : HexList(valueNode, $"{path}.{key}", size);
        return values is null ? null : new PcrRule(name ?? "", description, alg, index.Value, match, values);
    }

    private EventsRule? ReadEvents(YNode node, string path, string? name, string? description)
    {
        if (Map(node, path) is not { } m)
        {
            return null;
        }
        Keys(m, path, ["select", "condition"]);
        var select = Required(m, "select", path) is { } s ? ReadSelector(s, path + ".select") : null;
        var condition = Required(m, "condition", path) is { } c ? ReadCondition(c, path + ".condition") : null;
        return select is null || condition is null ? null : new EventsRule(name ?? "", description, select, condition);
    }

    private EventSelector? ReadSelector(YNode node, string path)
    {
        if (Map(node, path) is not { } m)
        {
            return null;
        }
        int before = errors.Count;
        Keys(m, path, ["pcr", "type", "variable", "path", "pathMatches", "digest"]);
        int? pcr = m.Get("pcr") is { } p ? Int(p, path + ".pcr", 0, 23) : null;
        TcgEventType? type = null;
        if (m.Get("type") is { } t && Str(t, path + ".type") is { } typeName)
        {
            if (EventTypesByName.TryGetValue(typeName, out var known))
            {
                type = known;
            }
            else if (typeName.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
                && uint.TryParse(typeName.AsSpan(2), System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out uint raw))
            {
                type = (TcgEventType)raw;
            }
            else
            {
                Error(t, path + ".type", $"unknown event type '{typeName}' (an EV_… name of the PC Client PFP, e.g. EV_EFI_BOOT_SERVICES_APPLICATION, or 0x…)");
            }
        }
        string? variable = m.Get("variable") is { } v ? Str(v, path + ".variable") : null;
        if (variable is { Length: 0 })
        {
            Error(m.Get("variable")!, path + ".variable", "the variable name is empty");
        }
        string? substring = m.Get("path") is { } ps ? Str(ps, path + ".path") : null;
        var pathMatches = m.Get("pathMatches") is { } pm ? Pattern(pm, path + ".pathMatches") : null;
        string? digest = m.Get("digest") is { } dg ? Hex(dg, path + ".digest", 0) : null;
        return errors.Count > before ? null : new EventSelector(pcr, type, variable, substring, pathMatches, digest);
    }

    private EventCondition? ReadCondition(YNode node, string path)
    {
        if (Map(node, path) is not { } m)
        {
            return null;
        }
        int before = errors.Count;
        Keys(m, path, ["op", "field", "value", "values"]);
        if (Required(m, "op", path) is not { } opNode || Str(opNode, path + ".op") is not { } opName)
        {
            return null;
        }
        if (!Operators.TryGetValue(opName, out var op))
        {
            Error(opNode, path + ".op", $"unknown operator '{opName}' (expected one of: {string.Join(", ", Operators.Keys)})");
            return null;
        }
        var fieldNode = m.Get("field");
        var valueNode = m.Get("value");
        var valuesNode = m.Get("values");
        bool counts = op is ConditionOperator.Any or ConditionOperator.None;
        bool takesValue = op is ConditionOperator.Equal or ConditionOperator.NotEqual or ConditionOperator.LessThan
            or ConditionOperator.GreaterThan or ConditionOperator.Matches;
        bool takesValues = op is ConditionOperator.In or ConditionOperator.NotIn or ConditionOperator.Subset;
        string? field = null;
        if (counts && fieldNode is not null)
        {
            Error(fieldNode, path + ".field", $"'{opName}' counts the selected events and takes no field");
        }
        else if (!counts && Required(m, "field", path) is { } f && Str(f, path + ".field") is { } fieldText)
        {
            field = FieldSyntax().IsMatch(fieldText) ? fieldText
                : Fail<string?>(f, path + ".field", $"unknown field '{fieldText}' (number, pcr, type, digest.<bank>, or data.<key>… into the decoded event data)", null);
        }
        if (!takesValue && valueNode is not null)
        {
            Error(valueNode, path + ".value", $"'{opName}' takes no value{(takesValues ? " (it takes values: a list)" : "")}");
        }
        if (!takesValues && valuesNode is not null)
        {
            Error(valuesNode, path + ".values", $"'{opName}' takes no values{(takesValue ? " (it takes value: a scalar)" : "")}");
        }
        PolicyValue? value = null;
        PolicyPattern? pattern = null;
        if (takesValue && Required(m, "value", path) is { } vn && Scalar(vn, path + ".value") is { } scalar)
        {
            value = new PolicyValue(scalar.Value, scalar.Plain);
            if (op is ConditionOperator.LessThan or ConditionOperator.GreaterThan && PolicyValues.Integer(scalar.Value) is null)
            {
                Error(vn, path + ".value", $"'{opName}' compares integers (decimal or 0x…): '{Truncate(scalar.Value)}' is not one");
            }
            if (op == ConditionOperator.Matches)
            {
                pattern = Pattern(vn, path + ".value");
            }
        }
        List<PolicyValue>? values = null;
        if (takesValues && Required(m, "values", path) is { } vsn && Seq(vsn, path + ".values") is { } items)
        {
            values = [];
            for (int i = 0; i < items.Count; i++)
            {
                if (Scalar(items[i], $"{path}.values[{i}]") is { } s)
                {
                    values.Add(new PolicyValue(s.Value, s.Plain));
                }
            }
            if (items.Count == 0)
            {
                Error(vsn, path + ".values", "the list is empty");
            }
        }
        return errors.Count > before ? null : new EventCondition(op, field, value, values, pattern);
    }

    private DigestsRule? ReadDigests(YNode node, string path, string? name, string? description)
    {
        if (Map(node, path) is not { } m)
        {
            return null;
        }
        int before = errors.Count;
        Keys(m, path, ["select", "bank", "allow", "deny"]);
        var select = m.Get("select") is { } s ? ReadSelector(s, path + ".select") : DigestsRule.DefaultSelect;
        var bank = m.Get("bank") is { } b ? Bank(b, path + ".bank") : TpmAlgId.Sha256;
        if (m.Get("allow") is null && m.Get("deny") is null)
        {
            Error(m, path, "a digests rule needs allow, deny or both");
        }
        if (bank is not { } alg)
        {
            return null;
        }
        int size = TpmHash.DigestSize(alg);
        var allow = m.Get("allow") is { } a ? HexList(a, path + ".allow", size) : null;
        var deny = m.Get("deny") is { } d ? HexList(d, path + ".deny", size) : null;
        return errors.Count > before || select is null ? null : new DigestsRule(name ?? "", description, select, alg, allow, deny);
    }

    private SecureBootRule? ReadSecureBoot(YNode node, string path, string? name, string? description)
    {
        if (Map(node, path) is not { } m)
        {
            return null;
        }
        int before = errors.Count;
        Keys(m, path, ["required", .. SecureBootRule.DatabaseKeys.Select(k => k.Key)]);
        bool required = m.Get("required") is { } r && Bool(r, path + ".required") == true;
        var databases = new Dictionary<string, DatabaseConstraint>(StringComparer.Ordinal);
        foreach (var (key, variable) in SecureBootRule.DatabaseKeys)
        {
            if (m.Get(key) is not { } dbNode || Map(dbNode, $"{path}.{key}") is not { } db)
            {
                continue;
            }
            string at = $"{path}.{key}";
            Keys(db, at, ["mustContain", "mustNotContain", "only"]);
            var must = db.Get("mustContain") is { } mc ? HexList(mc, at + ".mustContain", 32) : null;
            var mustNot = db.Get("mustNotContain") is { } mn ? HexList(mn, at + ".mustNotContain", 32) : null;
            var only = db.Get("only") is { } o ? HexList(o, at + ".only", 32) : null;
            if (db.Entries.Count == 0)
            {
                Error(db, at, "a database constraint needs mustContain, mustNotContain or only");
            }
            databases[variable] = new DatabaseConstraint(must, mustNot, only);
        }
        if (!required && databases.Count == 0 && errors.Count == before)
        {
            Error(m, path, "a secureBoot rule needs required: true or a pk, kek, db or dbx constraint");
        }
        return errors.Count > before ? null : new SecureBootRule(name ?? "", description, required, databases);
    }

    private KernelCmdlineRule? ReadKernelCmdline(YNode node, string path, string? name, string? description)
    {
        if (Map(node, path) is not { } m)
        {
            return null;
        }
        int before = errors.Count;
        Keys(m, path, ["equal", "matches", "mustContain", "mustNotContain"]);
        if (m.Entries.Count == 0)
        {
            Error(m, path, "a kernelCmdline rule needs equal, matches, mustContain or mustNotContain");
        }
        string? equal = m.Get("equal") is { } e ? Str(e, path + ".equal") : null;
        var matches = m.Get("matches") is { } mt ? Pattern(mt, path + ".matches") : null;
        var must = m.Get("mustContain") is { } mc ? Parameters(mc, path + ".mustContain") : null;
        var mustNot = m.Get("mustNotContain") is { } mn ? Parameters(mn, path + ".mustNotContain") : null;
        return errors.Count > before ? null : new KernelCmdlineRule(name ?? "", description, equal, matches, must, mustNot);
    }

    private TpmRule? ReadTpm(YNode node, string path, string? name, string? description)
    {
        if (Map(node, path) is not { } m)
        {
            return null;
        }
        int before = errors.Count;
        Keys(m, path, ["manufacturers", "minFirmwareVersion"]);
        if (m.Entries.Count == 0)
        {
            Error(m, path, "a tpm rule needs manufacturers, minFirmwareVersion or both");
        }
        var manufacturers = m.Get("manufacturers") is { } mf ? StringList(mf, path + ".manufacturers") : null;
        string? min = null;
        if (m.Get("minFirmwareVersion") is { } v && Str(v, path + ".minFirmwareVersion") is { } text)
        {
            min = VersionSyntax().IsMatch(text) ? text
                : Fail<string?>(v, path + ".minFirmwareVersion", $"'{text}' is not a version (numbers separated by dots, e.g. 7.85)", null);
        }
        return errors.Count > before ? null : new TpmRule(name ?? "", description, manufacturers, min);
    }

    private PolicyPattern? Pattern(YNode node, string field)
    {
        if (Str(node, field) is not { } s)
        {
            return null;
        }
        var pattern = PolicyRegex.TryCreate(s, out var error);
        return pattern ?? Fail<PolicyPattern?>(node, field, error!, null);
    }

    private List<string>? Parameters(YNode node, string field)
    {
        var list = StringList(node, field);
        if (list is null)
        {
            return null;
        }
        for (int i = 0; i < list.Count; i++)
        {
            if (list[i].Length == 0 || list[i].Any(char.IsWhiteSpace))
            {
                Error(((YSequence)node).Items[i], $"{field}[{i}]", $"'{list[i]}' is not one kernel parameter (non-empty, no spaces)");
                return null;
            }
        }
        return list;
    }
}

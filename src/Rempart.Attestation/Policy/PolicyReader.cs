using System.Globalization;
using System.Text.RegularExpressions;
using Rempart.Tpm;

namespace Rempart.Attestation.Policy;

/// <summary>
/// Reads a policy from its <see cref="YNode"/> tree against the schema of docs/policy.md. Every
/// problem is an error naming its line, column and field; unknown fields and operators are errors
/// (fail closed). The rule kinds are read in PolicyReader.Rules.cs.
/// </summary>
internal sealed partial class PolicyReader(List<PolicyError> errors)
{
    private const int MaxErrors = 50;

    internal static readonly string[] RuleKinds = ["pcr", "events", "digests", "secureBoot", "kernelCmdline", "tpm"];

    [GeneratedRegex(@"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\z")]
    private static partial Regex IdSyntax();

    [GeneratedRegex(@"\A[a-z0-9][a-z0-9._-]{0,63}\z")]
    private static partial Regex RuleNameSyntax();

    public PolicyDocument? Read(YNode root)
    {
        if (root is not YMapping m)
        {
            Error(root, "", $"a policy is a mapping with id, version, mode and rules (got {root.KindName})");
            return null;
        }
        Keys(m, "", ["id", "version", "mode", "description", "rules"]);
        string? id = Required(m, "id", "") is { } idNode ? Str(idNode, "id") : null;
        if (id is not null && !IdSyntax().IsMatch(id))
        {
            Error(m.Get("id")!, "id", $"'{id}' is not an id: letters, digits, '.', '_' and '-', at most 128, starting with a letter or digit");
        }
        int? version = Required(m, "version", "") is { } v ? Int(v, "version", 1, int.MaxValue) : null;
        var mode = PolicyMode.Enforce;
        if (m.Get("mode") is { } modeNode && Str(modeNode, "mode") is { } modeText)
        {
            mode = modeText switch
            {
                "enforce" => PolicyMode.Enforce,
                "audit" => PolicyMode.Audit,
                _ => Fail(modeNode, "mode", $"unknown mode '{modeText}' (enforce or audit)", PolicyMode.Enforce),
            };
        }
        string? description = m.Get("description") is { } d ? Str(d, "description") : null;
        var rules = new List<PolicyRule>();
        if (Required(m, "rules", "") is { } rulesNode && Seq(rulesNode, "rules") is { } items)
        {
            if (items.Count == 0)
            {
                Error(rulesNode, "rules", "a policy needs at least one rule");
            }
            var names = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < items.Count; i++)
            {
                string path = $"rules[{i}]";
                if (ReadRule(items[i], path) is { } rule)
                {
                    if (!names.Add(rule.Name))
                    {
                        Error(items[i], path + ".name", $"rule name '{rule.Name}' is used twice: failure ids must name one rule");
                    }
                    rules.Add(rule);
                }
            }
        }
        return errors.Count == 0 ? new PolicyDocument(id!, version!.Value, mode, rules, description) : null;
    }

    private PolicyRule? ReadRule(YNode node, string path)
    {
        if (Map(node, path) is not { } m)
        {
            return null;
        }
        Keys(m, path, ["name", "description", .. RuleKinds]);
        string? name = Required(m, "name", path) is { } n ? Str(n, path + ".name") : null;
        if (name is not null && !RuleNameSyntax().IsMatch(name))
        {
            Error(m.Get("name")!, path + ".name",
                $"'{name}' is not a rule name: lower-case letters, digits, '.', '_' and '-', at most 64, starting with a letter or digit (it becomes policy.rule.<name>)");
            name = null;
        }
        string? description = m.Get("description") is { } d ? Str(d, path + ".description") : null;
        var kinds = RuleKinds.Where(k => m.Get(k) is not null).ToList();
        if (kinds.Count != 1)
        {
            Error(m, path, kinds.Count == 0
                ? $"a rule needs one of: {string.Join(", ", RuleKinds)}"
                : $"a rule has exactly one of {string.Join(", ", RuleKinds)} (found {string.Join(" and ", kinds)})");
            return null;
        }
        string kind = kinds[0];
        var body = m.Get(kind)!;
        string at = $"{path}.{kind}";
        PolicyRule? rule = kind switch
        {
            "pcr" => ReadPcr(body, at, name, description),
            "events" => ReadEvents(body, at, name, description),
            "digests" => ReadDigests(body, at, name, description),
            "secureBoot" => ReadSecureBoot(body, at, name, description),
            "kernelCmdline" => ReadKernelCmdline(body, at, name, description),
            _ => ReadTpm(body, at, name, description),
        };
        return name is null ? null : rule;
    }

    // ---- generic readers: each reports its own error and returns null on failure ----

    private void Error(YNode at, string field, string message)
    {
        if (errors.Count < MaxErrors)
        {
            errors.Add(new PolicyError(at.Line, at.Column, field, message));
        }
    }

    private T Fail<T>(YNode at, string field, string message, T value)
    {
        Error(at, field, message);
        return value;
    }

    private static string Join(string path, string key) => path.Length == 0 ? key : $"{path}.{key}";

    private void Keys(YMapping m, string path, IReadOnlyCollection<string> allowed)
    {
        foreach (var (key, _) in m.Entries.Where(e => !allowed.Contains(e.Key.Value)))
        {
            Error(key, Join(path, key.Value), $"unknown field '{key.Value}' (expected one of: {string.Join(", ", allowed)})");
        }
    }

    private YNode? Required(YMapping m, string key, string path)
    {
        var node = m.Get(key);
        if (node is null)
        {
            Error(m, Join(path, key), $"missing required field '{key}'");
        }
        return node;
    }

    private YMapping? Map(YNode node, string field) =>
        node as YMapping ?? Fail<YMapping?>(node, field, $"expected a mapping (got {node.KindName})", null);

    private List<YNode>? Seq(YNode node, string field) =>
        (node as YSequence)?.Items ?? Fail<List<YNode>?>(node, field, $"expected a list (got {node.KindName})", null);

    private string? Str(YNode node, string field) =>
        (node as YScalar)?.Value ?? Fail<string?>(node, field, $"expected a string (got {node.KindName})", null);

    private YScalar? Scalar(YNode node, string field) =>
        node as YScalar ?? Fail<YScalar?>(node, field, $"expected a scalar (got {node.KindName})", null);

    private int? Int(YNode node, string field, int min, int max)
    {
        if (Scalar(node, field) is not { } s)
        {
            return null;
        }
        if (!s.Plain || !int.TryParse(s.Value, NumberStyles.None, CultureInfo.InvariantCulture, out int v))
        {
            return Fail<int?>(node, field, $"expected an unquoted integer (got '{s.Value}')", null);
        }
        return v < min || v > max ? Fail<int?>(node, field, $"{v} is out of range ({min} to {max})", null) : v;
    }

    private bool? Bool(YNode node, string field) => Scalar(node, field) is not { } s ? null
        : s.Plain && s.Value == "true" ? true
        : s.Plain && s.Value == "false" ? false
        : Fail<bool?>(node, field, $"expected true or false, unquoted (got '{s.Value}')", null);

    private List<string>? StringList(YNode node, string field)
    {
        if (Seq(node, field) is not { } items)
        {
            return null;
        }
        if (items.Count == 0)
        {
            return Fail<List<string>?>(node, field, "the list is empty", null);
        }
        var list = new List<string>();
        for (int i = 0; i < items.Count; i++)
        {
            if (Str(items[i], $"{field}[{i}]") is { } s)
            {
                list.Add(s);
            }
        }
        return list.Count == items.Count ? list : null;
    }

    /// <summary>A digest in hex (either case, kept lower-case) of exactly <paramref name="bytes"/> bytes, or of any known digest size when 0.</summary>
    private string? Hex(YNode node, string field, int bytes)
    {
        if (Str(node, field) is not { } s)
        {
            return null;
        }
        bool hex = s.Length > 0 && s.All(char.IsAsciiHexDigit);
        bool sized = bytes == 0 ? s.Length is 40 or 64 or 96 or 128 : s.Length == bytes * 2;
        if (!hex || !sized)
        {
            string size = bytes == 0 ? "20, 32, 48 or 64 bytes" : $"{bytes} bytes ({bytes * 2} hex digits)";
            return Fail<string?>(node, field, $"expected a hex digest of {size} (got '{Truncate(s)}', {s.Length} characters)", null);
        }
        return s.ToLowerInvariant();
    }

    private List<string>? HexList(YNode node, string field, int bytes)
    {
        if (Seq(node, field) is not { } items)
        {
            return null;
        }
        if (items.Count == 0)
        {
            return Fail<List<string>?>(node, field, "the list is empty", null);
        }
        var list = new List<string>();
        for (int i = 0; i < items.Count; i++)
        {
            if (Hex(items[i], $"{field}[{i}]", bytes) is { } h)
            {
                list.Add(h);
            }
        }
        return list.Count == items.Count ? list : null;
    }

    private TpmAlgId? Bank(YNode node, string field)
    {
        if (Str(node, field) is not { } s)
        {
            return null;
        }
        return TpmHash.TryParse(s, out var alg) && TpmHash.Computable(alg)
            ? alg
            : Fail<TpmAlgId?>(node, field, $"unknown bank '{s}' (sha1, sha256, sha384 or sha512)", null);
    }

    private static string Truncate(string s) => s.Length <= 80 ? s : s[..80] + "…";
}

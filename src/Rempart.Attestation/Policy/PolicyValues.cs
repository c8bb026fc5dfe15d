using System.Globalization;
using System.Numerics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rempart.Attestation.Policy;

public enum FieldKind
{
    String,
    Number,
    Bool,
    Json,
}

/// <summary>One value a field of an event yields: its text and what kind of JSON value it was.</summary>
public readonly record struct FieldValue(string Text, FieldKind Kind)
{
    public override string ToString() => Kind == FieldKind.String ? $"'{PolicyValues.Short(Text)}'" : PolicyValues.Short(Text);
}

/// <summary>Comparisons of claim values with policy operands, and the text helpers of failure messages.</summary>
internal static class PolicyValues
{
    private const int MaxShown = 160;

    /// <summary>An integer written in decimal (optionally negative) or as 0x… hex; null when it is neither.</summary>
    public static BigInteger? Integer(string s)
    {
        if (s.Length is 0 or > 64)
        {
            return null;
        }
        if (s.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            return s.Length > 2 && s[2..].All(char.IsAsciiHexDigit)
                && BigInteger.TryParse("0" + s[2..], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var h) ? h : null;
        }
        return BigInteger.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var d) ? d : null;
    }

    /// <summary>Equality by the claim value's kind: numbers numerically, booleans as true/false, strings and JSON ordinally.</summary>
    public static bool Same(FieldValue v, PolicyValue operand) => v.Kind switch
    {
        FieldKind.Number => Integer(v.Text) is { } a && Integer(operand.Text) is { } b ? a == b : v.Text == operand.Text,
        _ => string.Equals(v.Text, operand.Text, StringComparison.Ordinal),
    };

    /// <summary>The integer a value holds (a JSON number, or a string in decimal or 0x… hex), or null.</summary>
    public static BigInteger? Number(FieldValue v) => v.Kind is FieldKind.Number or FieldKind.String ? Integer(v.Text) : null;

    public static FieldValue? FromJson(JsonNode? node) => node switch
    {
        null => null,
        JsonValue value => value.GetValueKind() switch
        {
            JsonValueKind.String => new FieldValue(value.GetValue<string>(), FieldKind.String),
            JsonValueKind.Number => new FieldValue(value.ToJsonString(), FieldKind.Number),
            JsonValueKind.True => new FieldValue("true", FieldKind.Bool),
            JsonValueKind.False => new FieldValue("false", FieldKind.Bool),
            _ => null,
        },
        _ => new FieldValue(node.ToJsonString(), FieldKind.Json),
    };

    /// <summary>Compares dotted numeric versions ("7.85" &lt; "7.85.1"); null when either is not one.</summary>
    public static int? CompareVersions(string a, string b)
    {
        var x = VersionParts(a);
        var y = VersionParts(b);
        if (x is null || y is null)
        {
            return null;
        }
        for (int i = 0; i < Math.Max(x.Count, y.Count); i++)
        {
            var p = i < x.Count ? x[i] : BigInteger.Zero;
            var q = i < y.Count ? y[i] : BigInteger.Zero;
            if (p != q)
            {
                return p < q ? -1 : 1;
            }
        }
        return 0;
    }

    private static List<BigInteger>? VersionParts(string s)
    {
        var parts = new List<BigInteger>();
        foreach (var p in s.Trim().Split('.'))
        {
            if (p.Length is 0 or > 20 || !p.All(char.IsAsciiDigit))
            {
                return null;
            }
            parts.Add(BigInteger.Parse(p, CultureInfo.InvariantCulture));
        }
        return parts;
    }

    /// <summary>
    /// Kernel parameters as the kernel splits them: on whitespace outside double quotes
    /// (Documentation/admin-guide/kernel-parameters.rst), quotes kept.
    /// </summary>
    public static List<string> Parameters(string cmdline)
    {
        var list = new List<string>();
        var current = new StringBuilder();
        bool quoted = false;
        foreach (char c in cmdline)
        {
            if (c == '"')
            {
                quoted = !quoted;
            }
            if (char.IsWhiteSpace(c) && !quoted)
            {
                if (current.Length > 0)
                {
                    list.Add(current.ToString());
                    current.Clear();
                }
                continue;
            }
            current.Append(c);
        }
        if (current.Length > 0)
        {
            list.Add(current.ToString());
        }
        return list;
    }

    /// <summary>A policy entry names a parameter: itself, or, ending in '=', any value of it ("init=" matches "init=/bin/sh").</summary>
    public static bool NamesParameter(string entry, string parameter) =>
        parameter == entry || (entry.EndsWith('=') && parameter.StartsWith(entry, StringComparison.Ordinal));

    public static string Short(string s) => s.Length <= MaxShown ? s : s[..MaxShown] + $"… ({s.Length} characters)";

    /// <summary>At most <paramref name="max"/> items joined, then how many more.</summary>
    public static string List<T>(IReadOnlyCollection<T> items, int max = 10, string separator = "; ") =>
        items.Count <= max
            ? string.Join(separator, items)
            : string.Join(separator, items.Take(max)) + $"{separator}and {items.Count - max} more";
}

using System.Text.RegularExpressions;
using Rempart.Attestation.EventLog;
using Rempart.Tpm;

namespace Rempart.Attestation.Policy;

/// <summary>enforce: a failed rule refuses the attestation; audit: failures are reported, the attestation passes.</summary>
public enum PolicyMode
{
    Enforce,
    Audit,
}

/// <summary>A problem in a policy document: where (1-based line and column), which field (<c>rules[2].pcr.index</c>) and what.</summary>
public sealed record PolicyError(int Line, int Column, string Field, string Message)
{
    public override string ToString() => $"line {Line}, column {Column}: {(Field.Length > 0 ? Field + ": " : "")}{Message}";
}

/// <summary>A scalar operand as written: its text, and whether it was unquoted.</summary>
public sealed record PolicyValue(string Text, bool Plain);

/// <summary>A regular expression of a policy, compiled once with a match timeout (see <see cref="PolicyRegex"/>).</summary>
public sealed class PolicyPattern
{
    internal PolicyPattern(string pattern, Regex regex)
    {
        Pattern = pattern;
        Regex = regex;
    }

    public string Pattern { get; }

    internal Regex Regex { get; }

    public override string ToString() => Pattern;
}

/// <summary>One rule: <see cref="Name"/> is the suffix of its stable failure id, <c>policy.rule.&lt;name&gt;</c>.</summary>
public abstract record PolicyRule(string Name, string? Description)
{
    public string Id => "policy.rule." + Name;

    /// <summary>The document key of this rule's kind (pcr, events, digests, secureBoot, kernelCmdline, tpm).</summary>
    public abstract string Kind { get; }
}

public enum PcrMatch
{
    Equals,
    In,
    NotIn,
}

/// <summary><c>pcr</c>: the quoted value of one PCR of one bank equals a value, is one of a list, or none of it.</summary>
public sealed record PcrRule(string Name, string? Description, TpmAlgId Bank, int Index, PcrMatch Match, IReadOnlyList<string> Values)
    : PolicyRule(Name, Description)
{
    public override string Kind => "pcr";
}

/// <summary>
/// Which events a rule looks at. <see cref="Pcr"/>, <see cref="Type"/> and <see cref="Digest"/>
/// read what replay binds; <see cref="Variable"/>, <see cref="Path"/> and <see cref="PathMatches"/>
/// read decoded data, so they apply only to event types that carry a variable or a device path,
/// and only when the digest of every such candidate covers its data.
/// </summary>
public sealed record EventSelector(
    int? Pcr = null,
    TcgEventType? Type = null,
    string? Variable = null,
    string? Path = null,
    PolicyPattern? PathMatches = null,
    string? Digest = null)
{
    public bool ReadsData => Variable is not null || Path is not null || PathMatches is not null;
}

public enum ConditionOperator
{
    Equal,
    NotEqual,
    LessThan,
    GreaterThan,
    Any,
    None,
    In,
    NotIn,
    Exists,
    Absent,
    Matches,
    Subset,
}

/// <summary>A condition over the selected events: an operator, the field it reads (none for any/none) and its operand.</summary>
public sealed record EventCondition(
    ConditionOperator Operator,
    string? Field,
    PolicyValue? Value = null,
    IReadOnlyList<PolicyValue>? Values = null,
    PolicyPattern? Pattern = null)
{
    public bool ReadsData => Field is not null && Field.StartsWith("data", StringComparison.Ordinal);
}

/// <summary><c>events</c>: select events, then require a condition of them.</summary>
public sealed record EventsRule(string Name, string? Description, EventSelector Select, EventCondition Condition)
    : PolicyRule(Name, Description)
{
    public override string Kind => "events";
}

/// <summary><c>digests</c>: the selected events' digests (in one bank) must all be allowed and none denied.</summary>
public sealed record DigestsRule(string Name, string? Description, EventSelector Select, TpmAlgId Bank,
    IReadOnlyList<string>? Allow, IReadOnlyList<string>? Deny)
    : PolicyRule(Name, Description)
{
    public override string Kind => "digests";

    /// <summary>The selector when none is written: boot applications, PCR 4.</summary>
    public static EventSelector DefaultSelect { get; } = new(Pcr: 4, Type: TcgEventType.EfiBootServicesApplication);
}

/// <summary>Constraints on one signature database; entries are SHA-256 hex (certificate fingerprints, or hashes).</summary>
public sealed record DatabaseConstraint(IReadOnlyList<string>? MustContain, IReadOnlyList<string>? MustNotContain, IReadOnlyList<string>? Only);

/// <summary><c>secureBoot</c>: SecureBoot=1 when <see cref="Required"/>, and content constraints on PK, KEK, db and dbx.</summary>
public sealed record SecureBootRule(string Name, string? Description, bool Required, IReadOnlyDictionary<string, DatabaseConstraint> Databases)
    : PolicyRule(Name, Description)
{
    public override string Kind => "secureBoot";

    /// <summary>Document keys of the databases and the variable each names.</summary>
    public static IReadOnlyList<(string Key, string Variable)> DatabaseKeys { get; } = [("pk", "PK"), ("kek", "KEK"), ("db", "db"), ("dbx", "dbx")];
}

/// <summary><c>kernelCmdline</c>: every measured kernel command line equals, matches, contains and does not contain.</summary>
public sealed record KernelCmdlineRule(string Name, string? Description, string? EqualTo, PolicyPattern? Matches,
    IReadOnlyList<string>? MustContain, IReadOnlyList<string>? MustNotContain)
    : PolicyRule(Name, Description)
{
    public override string Kind => "kernelCmdline";
}

/// <summary><c>tpm</c>: the TPM's manufacturer is one of a list, its firmware version at least a version.</summary>
public sealed record TpmRule(string Name, string? Description, IReadOnlyList<string>? Manufacturers, string? MinFirmwareVersion)
    : PolicyRule(Name, Description)
{
    public override string Kind => "tpm";
}

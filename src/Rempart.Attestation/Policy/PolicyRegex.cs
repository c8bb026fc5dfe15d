using System.Text.RegularExpressions;

namespace Rempart.Attestation.Policy;

/// <summary>
/// Regular expressions in policies: .NET syntax, matched against the whole value (the pattern is
/// anchored as <c>\A(?:pattern)\z</c>), culture-invariant, at most <see cref="MaxPatternLength"/>
/// characters, and each match bounded by <see cref="Timeout"/>. A match that times out is a failed
/// rule (fail closed), never an exception.
/// </summary>
public static class PolicyRegex
{
    public const int MaxPatternLength = 1024;

    /// <summary>The match timeout of every policy regex.</summary>
    public static TimeSpan Timeout { get; } = TimeSpan.FromMilliseconds(100);

    internal static PolicyPattern? TryCreate(string pattern, out string? error)
    {
        if (pattern.Length > MaxPatternLength)
        {
            error = $"the regular expression is {pattern.Length} characters long, more than {MaxPatternLength}";
            return null;
        }
        try
        {
            // Parsed alone first: a pattern that is valid by itself has balanced groups, so
            // wrapping it cannot escape the anchors ("x)|(.*" is refused here).
            _ = new Regex(pattern, RegexOptions.CultureInvariant, Timeout);
            var regex = new Regex($@"\A(?:{pattern})\z", RegexOptions.CultureInvariant, Timeout);
            error = null;
            return new PolicyPattern(pattern, regex);
        }
        catch (ArgumentException e)
        {
            error = $"not a valid regular expression: {e.Message}";
            return null;
        }
    }

    /// <summary>True when the whole value matches; null when the match timed out.</summary>
    internal static bool? IsMatch(PolicyPattern pattern, string value)
    {
        try
        {
            return pattern.Regex.IsMatch(value);
        }
        catch (RegexMatchTimeoutException)
        {
            return null;
        }
    }

    internal static string TimedOut(PolicyPattern pattern) =>
        $"the regular expression /{pattern.Pattern}/ timed out after {Timeout.TotalMilliseconds} ms (fail closed)";
}

namespace Rempart.KeyProtection;

/// <summary>DESIGN.md G7: how much of the VM a fabric administrator may reach.</summary>
public enum ShieldingLevel
{
    /// <summary><c>shielded</c>: no console, serial, display, monitor or debug path.</summary>
    Shielded,

    /// <summary><c>encryption-supported</c>: encrypted like a shielded VM; console allowed, every access audited.</summary>
    EncryptionSupported,
}

/// <summary>
/// The release policy a key protector carries and the Guardian enforces: the shielding level and the
/// host groups whose healthy hosts may receive the VM master key (non-empty, unique, kept in ordinal
/// order so the policy has one canonical form).
/// </summary>
public sealed class ReleasePolicy
{
    public const int MaxHostGroups = 32;

    public ReleasePolicy(ShieldingLevel shielding, IEnumerable<string> hostGroups)
    {
        if (!Enum.IsDefined(shielding))
        {
            throw new ArgumentOutOfRangeException(nameof(shielding));
        }
        var groups = hostGroups.ToList();
        if (groups.Count is 0 or > MaxHostGroups)
        {
            throw new ArgumentException($"a release policy names 1-{MaxHostGroups} host groups", nameof(hostGroups));
        }
        if (groups.FirstOrDefault(g => !KeyIds.IsName(g)) is { } bad)
        {
            throw new ArgumentException($"host group '{bad}': a name is 1-64 ASCII letters, digits, '.', '-' or '_'", nameof(hostGroups));
        }
        if (groups.Distinct(StringComparer.Ordinal).Count() != groups.Count)
        {
            throw new ArgumentException("host groups are listed twice", nameof(hostGroups));
        }
        Shielding = shielding;
        HostGroups = [.. groups.Order(StringComparer.Ordinal)];
    }

    public ShieldingLevel Shielding { get; }

    /// <summary>Allowed host groups, in ordinal order.</summary>
    public IReadOnlyList<string> HostGroups { get; }

    /// <summary>Whether a host of <paramref name="hostGroup"/> may receive the key (exact, case-sensitive match).</summary>
    public bool Allows(string hostGroup) => HostGroups.Contains(hostGroup, StringComparer.Ordinal);

    /// <summary>The wire name: <c>shielded</c> or <c>encryption-supported</c>.</summary>
    public static string ToWire(ShieldingLevel s) => s switch
    {
        ShieldingLevel.Shielded => "shielded",
        ShieldingLevel.EncryptionSupported => "encryption-supported",
        _ => throw new ArgumentOutOfRangeException(nameof(s)),
    };

    public static bool TryParseShielding(string? s, out ShieldingLevel level)
    {
        (bool ok, level) = s switch
        {
            "shielded" => (true, ShieldingLevel.Shielded),
            "encryption-supported" => (true, ShieldingLevel.EncryptionSupported),
            _ => (false, default),
        };
        return ok;
    }
}

namespace Rempart.Guardian;

/// <summary>The Guardian's settings (command-line options of `rempart-guardian serve`).</summary>
public sealed record GuardianOptions
{
    /// <summary>Data folder: SQLite database, TLS certificate, admin credential, keys.</summary>
    public required string DataDir { get; init; }

    /// <summary>Folder of trusted TPM manufacturer CA certificates (PEM or DER) for EK certificates.</summary>
    public required string TrustedEkCaDir { get; init; }

    /// <summary>Health token lifetime (default: minutes, per the issue).</summary>
    public TimeSpan TokenLifetime { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Nonce lifetime: short, single use.</summary>
    public TimeSpan NonceLifetime { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Enrolment challenge lifetime.</summary>
    public TimeSpan ChallengeLifetime { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>Requests per second allowed to one client address; 0 turns the limit off (load tests).</summary>
    public int RateLimitPerSecond { get; init; } = 200;

    /// <summary>The Guardian's name in tokens (iss).</summary>
    public string Issuer { get; init; } = "rempart-guardian";
}

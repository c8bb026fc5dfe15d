using System.Text.Json;
using System.Text.Json.Serialization;

namespace Rempart.Guardian.Ops;

/// <summary>
/// Settings of the operations services, read once at start from the optional file
/// <c>DATA/ops.json</c> (defaults when it is absent). Unknown keys and out-of-range values stop the
/// Guardian with a message naming them: a typo must not silently disable stale detection.
/// <code>
/// {
///   "attestationPeriodSeconds": 60,    // hosts attest this often; stale after 2 periods
///   "sweepIntervalSeconds": 5,         // how often the monitor looks for stale hosts
///   "webhooks": ["https://ops.example/rempart"],
///   "webhookMaxAttempts": 6,           // per event and URL
///   "webhookInitialBackoffMs": 1000,   // doubled after each failed attempt
///   "webhookTimeoutSeconds": 10
/// }
/// </code>
/// </summary>
public sealed record OpsOptions
{
    public const string FileName = "ops.json";

    /// <summary>How often hosts are expected to attest (the default: one minute).</summary>
    public TimeSpan AttestationPeriod { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How often the continuous-attestation monitor sweeps.</summary>
    public TimeSpan SweepInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>URLs that receive host state events: https, or http on loopback only; no credentials in the URL's user info.</summary>
    public IReadOnlyList<Uri> Webhooks { get; init; } = [];

    public int WebhookMaxAttempts { get; init; } = 6;

    public TimeSpan WebhookInitialBackoff { get; init; } = TimeSpan.FromSeconds(1);

    public TimeSpan WebhookTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A healthy host whose last attestation is older than this becomes stale.</summary>
    public TimeSpan StaleAfter => 2 * AttestationPeriod;

    /// <summary>Reads <c>ops.json</c> from the data folder, or the defaults when there is none.</summary>
    public static OpsOptions Load(string dataDir)
    {
        var path = Path.Combine(dataDir, FileName);
        if (!File.Exists(path))
        {
            return new OpsOptions();
        }
        OpsFile file;
        try
        {
            file = JsonSerializer.Deserialize<OpsFile>(File.ReadAllBytes(path), FileJson) ?? new OpsFile();
        }
        catch (JsonException e)
        {
            throw new InvalidOperationException($"{path}: {e.Message}");
        }
        return file.ToOptions(path);
    }

    private static readonly JsonSerializerOptions FileJson = new()
    {
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };

    private sealed record OpsFile
    {
        [JsonPropertyName("attestationPeriodSeconds")]
        public double AttestationPeriodSeconds { get; init; } = 60;

        [JsonPropertyName("sweepIntervalSeconds")]
        public double SweepIntervalSeconds { get; init; } = 5;

        [JsonPropertyName("webhooks")]
        public string[] Webhooks { get; init; } = [];

        [JsonPropertyName("webhookMaxAttempts")]
        public int WebhookMaxAttempts { get; init; } = 6;

        [JsonPropertyName("webhookInitialBackoffMs")]
        public double WebhookInitialBackoffMs { get; init; } = 1000;

        [JsonPropertyName("webhookTimeoutSeconds")]
        public double WebhookTimeoutSeconds { get; init; } = 10;

        public OpsOptions ToOptions(string path)
        {
            void Check(bool ok, string what)
            {
                if (!ok)
                {
                    throw new InvalidOperationException($"{path}: {what}");
                }
            }
            Check(AttestationPeriodSeconds is >= 1 and <= 86_400, "attestationPeriodSeconds must be 1 to 86400");
            Check(SweepIntervalSeconds is >= 1 and <= 3_600, "sweepIntervalSeconds must be 1 to 3600");
            Check(WebhookMaxAttempts is >= 1 and <= 20, "webhookMaxAttempts must be 1 to 20");
            Check(WebhookInitialBackoffMs is >= 10 and <= 600_000, "webhookInitialBackoffMs must be 10 to 600000");
            Check(WebhookTimeoutSeconds is >= 1 and <= 120, "webhookTimeoutSeconds must be 1 to 120");
            var urls = new List<Uri>();
            // Messages name a webhook by its index and host: its path or query may hold a secret.
            foreach (var (w, i) in Webhooks.Select((w, i) => (w, i)))
            {
                Check(Uri.TryCreate(w, UriKind.Absolute, out var u) && (u.Scheme == Uri.UriSchemeHttps || u.Scheme == Uri.UriSchemeHttp),
                    $"webhooks[{i}] is not an absolute http(s) URL");
                Check(u!.UserInfo.Length == 0, $"webhooks[{i}] ({u.Host}): credentials in the URL are not allowed");
                Check(u.Scheme == Uri.UriSchemeHttps || u.IsLoopback, $"webhooks[{i}] ({u.Host}) must be https (plain http only on loopback)");
                urls.Add(u);
            }
            return new OpsOptions
            {
                AttestationPeriod = TimeSpan.FromSeconds(AttestationPeriodSeconds),
                SweepInterval = TimeSpan.FromSeconds(SweepIntervalSeconds),
                Webhooks = urls,
                WebhookMaxAttempts = WebhookMaxAttempts,
                WebhookInitialBackoff = TimeSpan.FromMilliseconds(WebhookInitialBackoffMs),
                WebhookTimeout = TimeSpan.FromSeconds(WebhookTimeoutSeconds),
            };
        }
    }
}

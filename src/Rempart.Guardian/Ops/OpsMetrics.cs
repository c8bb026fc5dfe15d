using System.Globalization;
using System.Text;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Ops;

/// <summary>
/// The Guardian's counters and the attestation and key release latency histograms, rendered in the Prometheus
/// text exposition format (version 0.0.4). Label values are stable identifiers only (verdicts,
/// problem ids, host states): never host ids, tokens or anything from a request.
/// </summary>
public sealed class OpsMetrics
{
    /// <summary>Latency buckets (seconds): a verification takes milliseconds; a slow database shows up in the tail.</summary>
    public static readonly double[] DurationBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    /// <summary>Key release buckets (seconds): a release is a few milliseconds of crypto and one audit append, so finer at the bottom.</summary>
    public static readonly double[] ReleaseBuckets = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private static readonly string[] AllStates =
        [HostStates.Pending, HostStates.Approved, HostStates.Healthy, HostStates.Stale, HostStates.Failed, HostStates.Removed];

    private readonly Lock _lock = new();
    private readonly SortedDictionary<string, long> _attestations = new(StringComparer.Ordinal) { ["affirming"] = 0, ["contraindicated"] = 0 };
    private readonly SortedDictionary<string, long> _enrolments = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, long> _webhooks = new(StringComparer.Ordinal) { ["delivered"] = 0, ["failed"] = 0, ["dropped"] = 0 };
    private readonly long[] _bucketCounts = new long[DurationBuckets.Length];
    private long _durationCount;
    private double _durationSum;
    private long _markedStale;
    private readonly SortedDictionary<string, long> _releases = new(StringComparer.Ordinal) { ["released"] = 0 };
    private readonly long[] _releaseBucketCounts = new long[ReleaseBuckets.Length];
    private double _releaseSum;

    /// <summary>Counts one attestation verdict and its duration.</summary>
    public void Attestation(string result, TimeSpan duration)
    {
        var seconds = duration.TotalSeconds;
        lock (_lock)
        {
            Increment(_attestations, Label(result));
            for (int i = 0; i < DurationBuckets.Length; i++)
            {
                if (seconds <= DurationBuckets[i])
                {
                    _bucketCounts[i]++;
                }
            }
            _durationCount++;
            _durationSum += seconds;
        }
    }

    /// <summary>Counts one key release outcome ("released", or the refusal's problem id) and its duration.</summary>
    public void Release(string result, TimeSpan duration)
    {
        var seconds = duration.TotalSeconds;
        lock (_lock)
        {
            Increment(_releases, Label(result));
            for (int i = 0; i < ReleaseBuckets.Length; i++)
            {
                if (seconds <= ReleaseBuckets[i])
                {
                    _releaseBucketCounts[i]++;
                }
            }
            _releaseSum += seconds;
        }
    }

    /// <summary>Counts one enrolment outcome: the host's resulting state, or the refusal's problem id.</summary>
    public void Enrolment(string result)
    {
        lock (_lock)
        {
            Increment(_enrolments, Label(result));
        }
    }

    /// <summary>Counts webhook deliveries: delivered, failed (attempts exhausted) or dropped (queue full).</summary>
    public void Webhook(string result)
    {
        lock (_lock)
        {
            Increment(_webhooks, Label(result));
        }
    }

    public void MarkedStale(int count)
    {
        lock (_lock)
        {
            _markedStale += count;
        }
    }

    /// <summary>The exposition text; <paramref name="hostsByState"/> is read from the store at scrape time.</summary>
    public string Render(IReadOnlyDictionary<string, int> hostsByState)
    {
        var w = new StringBuilder();
        lock (_lock)
        {
            Family(w, "rempart_attestations_total", "counter", "Attestation verdicts, by result.");
            foreach (var (k, v) in _attestations)
            {
                Sample(w, "rempart_attestations_total", "result", k, v);
            }
            Family(w, "rempart_attestation_duration_seconds", "histogram", "Time to answer POST /v1/attestations.");
            for (int i = 0; i < DurationBuckets.Length; i++)
            {
                Sample(w, "rempart_attestation_duration_seconds_bucket", "le", Number(DurationBuckets[i]), _bucketCounts[i]);
            }
            Sample(w, "rempart_attestation_duration_seconds_bucket", "le", "+Inf", _durationCount);
            w.Append("rempart_attestation_duration_seconds_sum ").Append(Number(_durationSum)).Append('\n');
            w.Append("rempart_attestation_duration_seconds_count ").Append(_durationCount).Append('\n');
            Family(w, "rempart_releases_total", "counter", "Key release outcomes: released, or the refusal's problem id.");
            foreach (var (k, v) in _releases)
            {
                Sample(w, "rempart_releases_total", "result", k, v);
            }
            long releases = _releases.Values.Sum();
            Family(w, "rempart_release_duration_seconds", "histogram", "Time to answer POST /v1/releases (released or refused).");
            for (int i = 0; i < ReleaseBuckets.Length; i++)
            {
                Sample(w, "rempart_release_duration_seconds_bucket", "le", Number(ReleaseBuckets[i]), _releaseBucketCounts[i]);
            }
            Sample(w, "rempart_release_duration_seconds_bucket", "le", "+Inf", releases);
            w.Append("rempart_release_duration_seconds_sum ").Append(Number(_releaseSum)).Append('\n');
            w.Append("rempart_release_duration_seconds_count ").Append(releases).Append('\n');
            Family(w, "rempart_enrolments_total", "counter", "Enrolment outcomes: the new host's state, or the refusal's problem id.");
            foreach (var (k, v) in _enrolments)
            {
                Sample(w, "rempart_enrolments_total", "result", k, v);
            }
            Family(w, "rempart_hosts_marked_stale_total", "counter", "Healthy hosts the monitor marked stale (no attestation within two periods).");
            w.Append("rempart_hosts_marked_stale_total ").Append(_markedStale).Append('\n');
            Family(w, "rempart_webhook_deliveries_total", "counter", "Webhook event deliveries, by result.");
            foreach (var (k, v) in _webhooks)
            {
                Sample(w, "rempart_webhook_deliveries_total", "result", k, v);
            }
        }
        Family(w, "rempart_hosts", "gauge", "Hosts, by state.");
        foreach (var state in AllStates.Concat(hostsByState.Keys.Except(AllStates).Order(StringComparer.Ordinal)))
        {
            Sample(w, "rempart_hosts", "state", Label(state), hostsByState.GetValueOrDefault(state));
        }
        return w.ToString();
    }

    /// <summary>Keeps label values to stable identifiers: anything else becomes "other" (bounded cardinality).</summary>
    internal static string Label(string value) =>
        value.Length is > 0 and <= 64 && value.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '.' or '-' or '_')
            ? value
            : "other";

    private static void Increment(SortedDictionary<string, long> counters, string key) =>
        counters[key] = counters.GetValueOrDefault(key) + 1;

    private static void Family(StringBuilder w, string name, string type, string help) =>
        w.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n')
         .Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');

    // Label values pass through Label() or are numbers, so none needs escaping.
    private static void Sample(StringBuilder w, string name, string label, string value, long count) =>
        w.Append(name).Append('{').Append(label).Append("=\"").Append(value).Append("\"} ").Append(count).Append('\n');

    private static string Number(double d) => d.ToString("R", CultureInfo.InvariantCulture);
}

using System.Globalization;

namespace Rempart.ReleaseBench;

/// <summary>
/// The Guardian's own view of the releases of one window: the difference of two scrapes of
/// <c>GET /metrics</c> (<c>rempart_release_duration_seconds</c>, timed from when the request
/// reaches the Guardian's pipeline to when its answer is written; <c>rempart_releases_total</c>).
/// Percentiles are interpolated inside a bucket, as Prometheus' histogram_quantile does, so they are
/// estimates; <see cref="P99UpperMs"/> is the bucket bound the 99th percentile is certainly under.
/// </summary>
public sealed record ServerLatency(long Count, long Released, double MeanMs, double P50Ms, double P99Ms, double P99UpperMs)
{
    public static ServerLatency Between(string before, string after)
    {
        var a = Scrape.Parse(before);
        var b = Scrape.Parse(after);
        double D(string key) => b.GetValueOrDefault(key) - a.GetValueOrDefault(key);
        var buckets = b.Keys.Where(k => k.StartsWith("rempart_release_duration_seconds_bucket{", StringComparison.Ordinal))
            .Select(k => (Le: LeOf(k), Count: D(k)))
            .OrderBy(x => x.Le)
            .ToList();
        if (buckets.Count == 0)
        {
            throw new InvalidOperationException("the Guardian's /metrics has no rempart_release_duration_seconds histogram");
        }
        long count = (long)D("rempart_release_duration_seconds_count");
        double Quantile(double q, bool upper)
        {
            if (count == 0)
            {
                return 0;
            }
            double rank = q * count, lowerLe = 0, lowerCount = 0;
            foreach (var (le, cum) in buckets)
            {
                if (cum >= rank)
                {
                    if (double.IsPositiveInfinity(le))
                    {
                        return lowerLe * 1000; // beyond the last finite bucket: its bound is all that is known
                    }
                    return 1000 * (upper || cum == lowerCount ? le : lowerLe + ((le - lowerLe) * (rank - lowerCount) / (cum - lowerCount)));
                }
                (lowerLe, lowerCount) = (le, cum);
            }
            return lowerLe * 1000;
        }
        return new ServerLatency(count, (long)D("rempart_releases_total{result=\"released\"}"),
            count > 0 ? 1000 * D("rempart_release_duration_seconds_sum") / count : 0,
            Quantile(0.50, false), Quantile(0.99, false), Quantile(0.99, true));
    }

    private static double LeOf(string key)
    {
        int start = key.IndexOf("le=\"", StringComparison.Ordinal) + 4;
        var le = key[start..key.IndexOf('"', start)];
        return le == "+Inf" ? double.PositiveInfinity : double.Parse(le, CultureInfo.InvariantCulture);
    }
}

/// <summary>The samples of a Prometheus text exposition (0.0.4): <c>name{labels} value</c> per line, comments skipped.</summary>
public static class Scrape
{
    public static Dictionary<string, double> Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var samples = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }
            int space = line.LastIndexOf(' ');
            if (space > 0 && double.TryParse(line.AsSpan(space + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out var v))
            {
                samples[line[..space]] = v;
            }
        }
        return samples;
    }
}

using System.Collections.Concurrent;
using System.Diagnostics;

namespace Rempart.LoadGen;

/// <summary>Latency percentiles in milliseconds.</summary>
public sealed record Latency(int Count, double Mean, double P50, double P90, double P99, double Max)
{
    public static Latency Of(List<double> ms)
    {
        if (ms.Count == 0)
        {
            return new Latency(0, 0, 0, 0, 0, 0);
        }
        ms.Sort();
        double At(double q) => ms[Math.Min(ms.Count - 1, (int)Math.Ceiling(q * ms.Count) - 1)];
        return new Latency(ms.Count, ms.Average(), At(0.50), At(0.90), At(0.99), ms[^1]);
    }
}

/// <summary>
/// What one timed run measured. <see cref="Cycle"/> is one host's whole attestation — nonce
/// request, the software TPM's quote and certification, evidence request, verdict; the nonce and
/// evidence requests are also timed alone. Only affirming verdicts received within the measured
/// window count (and give latency samples); every refusal or error, warm-up included, is in
/// <see cref="Errors"/> by its id.
/// </summary>
public sealed record LoadResult(int Concurrency, double WindowSeconds, long Affirmed, double AttestationsPerSecond,
    Latency Cycle, Latency NonceRequest, Latency EvidenceRequest, double ClientBuildMicroseconds,
    IReadOnlyDictionary<string, long> Errors, CpuUsage Cpu)
{
    public long ErrorCount => Errors.Values.Sum();
}

/// <summary>
/// The timed run: <c>C</c> simulated hosts in parallel, each looping nonce → evidence → verdict,
/// for a warm-up and then the measured window. Without a rate the loop is closed with no think
/// time, so the latency is C ÷ throughput by Little's law; with a rate R each of the C workers
/// starts a cycle every C ÷ R seconds (staggered), so the latency is measured at that offered load.
/// A worker that falls behind starts its next cycle at once but does not burst to catch up: an
/// overloaded Guardian shows as an achieved rate below R.
/// </summary>
public static class LoadRun
{
    public static async Task<LoadResult> RunAsync(GuardianHttp http, IReadOnlyList<EnrolledHost> hosts, int concurrency, TimeSpan warmUp, TimeSpan duration,
        double? rate, GuardianProcess? guardian, string? database, TextWriter progress, CancellationToken ct)
    {
        if (rate is <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(rate), "an offered rate is positive");
        }
        if (concurrency < 1 || concurrency > hosts.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(concurrency), $"concurrency must be 1 to the number of hosts ({hosts.Count}): a host attests one nonce at a time");
        }
        var errors = new ConcurrentDictionary<string, long>();
        var workers = new Worker[concurrency];
        long start = Stopwatch.GetTimestamp();
        long measureFrom = start + (long)(warmUp.TotalSeconds * Stopwatch.Frequency);
        long measureTo = measureFrom + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        var tasks = new Task[concurrency];
        for (int w = 0; w < concurrency; w++)
        {
            // Worker w owns hosts w, w + C, w + 2C, …: never two attestations of one TPM at once.
            var owned = hosts.Where((_, i) => i % concurrency == w).ToArray();
            long interval = rate is { } r ? (long)(concurrency / r * Stopwatch.Frequency) : 0;
            var worker = workers[w] = new Worker(http, owned, errors, measureFrom, measureTo, interval, start + (interval * w / concurrency));
            tasks[w] = Task.Run(() => worker.RunAsync(ct), ct);
        }

        await Task.Delay(warmUp, ct);
        var cpuFrom = CpuMeter.Take(guardian, database);
        for (int s = 1; s <= (int)duration.TotalSeconds; s++)
        {
            long before = workers.Sum(w => w.Affirmed);
            await Task.Delay(TimeSpan.FromSeconds(1), ct);
            long slowest = Interlocked.Exchange(ref Worker.SlowestThisSecond, 0);
            progress.WriteLine($"  {s,3} s: {workers.Sum(w => w.Affirmed) - before,6} affirmed/s, slowest {slowest * 1000.0 / Stopwatch.Frequency,7:0.0} ms, errors {errors.Values.Sum()}");
        }
        var rest = TimeSpan.FromSeconds((measureTo - Stopwatch.GetTimestamp()) / (double)Stopwatch.Frequency);
        if (rest > TimeSpan.Zero)
        {
            await Task.Delay(rest, ct);
        }
        var cpuTo = CpuMeter.Take(guardian, database);
        await Task.WhenAll(tasks);

        long affirmed = workers.Sum(w => w.Affirmed);
        return new LoadResult(concurrency, duration.TotalSeconds, affirmed, affirmed / duration.TotalSeconds,
            Latency.Of(workers.SelectMany(w => w.Cycle).ToList()),
            Latency.Of(workers.SelectMany(w => w.Nonce).ToList()),
            Latency.Of(workers.SelectMany(w => w.Evidence).ToList()),
            workers.Sum(w => w.BuildTicks) * 1e6 / Stopwatch.Frequency / Math.Max(1, workers.Sum(w => w.Built)),
            new SortedDictionary<string, long>(errors, StringComparer.Ordinal),
            CpuUsage.Between(cpuFrom, cpuTo));
    }

    private sealed class Worker(GuardianHttp http, EnrolledHost[] hosts, ConcurrentDictionary<string, long> errors, long measureFrom, long measureTo,
        long interval, long firstStart)
    {
        public List<double> Cycle { get; } = new(8192);

        public List<double> Nonce { get; } = new(8192);

        public List<double> Evidence { get; } = new(8192);

        public long Affirmed;

        /// <summary>The longest cycle that ended since the progress line last read it (ticks).</summary>
        public static long SlowestThisSecond;

        public long BuildTicks;

        public long Built;

        public async Task RunAsync(CancellationToken ct)
        {
            long next = firstStart;
            for (int i = 0; Stopwatch.GetTimestamp() < measureTo; i++)
            {
                if (interval > 0)
                {
                    long wait = next - Stopwatch.GetTimestamp();
                    if (wait > 0)
                    {
                        await Task.Delay(TimeSpan.FromSeconds(wait / (double)Stopwatch.Frequency), ct);
                    }
                    next = Math.Max(next + interval, Stopwatch.GetTimestamp());
                }
                var host = hosts[i % hosts.Length];
                long t0 = Stopwatch.GetTimestamp();
                try
                {
                    var nonce = await http.NonceAsync(host.HostId, ct);
                    long t1 = Stopwatch.GetTimestamp();
                    var evidence = host.Tpm.Evidence(host.HostId, nonce.Nonce);
                    long t2 = Stopwatch.GetTimestamp();
                    var verdict = await http.AttestAsync(evidence, ct);
                    long t3 = Stopwatch.GetTimestamp();
                    if (verdict.Status != "affirming" || verdict.Token is null)
                    {
                        foreach (var f in verdict.Failures.DefaultIfEmpty(new("verdict." + verdict.Status, "")))
                        {
                            errors.AddOrUpdate(f.Id, 1, (_, n) => n + 1);
                        }
                        continue;
                    }
                    for (long seen = Volatile.Read(ref SlowestThisSecond); t3 - t0 > seen;)
                    {
                        long was = Interlocked.CompareExchange(ref SlowestThisSecond, t3 - t0, seen);
                        seen = was == seen ? t3 - t0 : was;
                    }
                    if (t3 >= measureFrom && t3 <= measureTo)
                    {
                        Affirmed++;
                        Cycle.Add(Ms(t3 - t0));
                        Nonce.Add(Ms(t1 - t0));
                        Evidence.Add(Ms(t3 - t2));
                        BuildTicks += t2 - t1;
                        Built++;
                    }
                }
                catch (GuardianError e)
                {
                    errors.AddOrUpdate(e.Id, 1, (_, n) => n + 1);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    errors.AddOrUpdate("client." + e.GetType().Name, 1, (_, n) => n + 1);
                }
            }
        }

        private static double Ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;
    }
}

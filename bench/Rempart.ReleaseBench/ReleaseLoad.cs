using System.Collections.Concurrent;
using System.Diagnostics;
using Rempart.Attestation.Protocol;
using Rempart.LoadGen;

namespace Rempart.ReleaseBench;

/// <summary>
/// What one timed release run measured. Only releases that started after the warm-up and ended
/// within the window count; every refusal or error, warm-up included, is in <see cref="Errors"/> by
/// its problem id. <see cref="Checked"/> answers were opened with the host's binding key and compared
/// with the VM master key after the window; <see cref="CheckProblems"/> lists those that were wrong.
/// </summary>
public sealed record ReleaseLoadResult(int Concurrency, double WindowSeconds, long Released, double ReleasesPerSecond, Latency Client,
    ServerLatency? Server, IReadOnlyDictionary<string, long> Errors, int Checked, IReadOnlyList<string> CheckProblems, CpuUsage? Cpu)
{
    public long ErrorCount => Errors.Values.Sum();

    /// <summary>Open loop (<see cref="OpenLoad"/>): the offered rate; null for the closed loop.</summary>
    public double? OfferedPerSecond { get; init; }

    /// <summary>Open loop: the most releases in flight at once.</summary>
    public int? MaxInFlight { get; init; }

    /// <summary>"closed, C clients" or "open, R/s over C connections".</summary>
    public string Mode => OfferedPerSecond is { } r
        ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $"open, {r:0}/s over {Concurrency} connections")
        : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"closed, {Concurrency} clients");

    /// <summary>A valid run: releases were counted, nothing was refused or failed, and every checked answer opened to the right key.</summary>
    public bool Valid => Released > 0 && ErrorCount == 0 && Checked > 0 && CheckProblems.Count == 0;
}

/// <summary>
/// The timed release run: <c>C</c> clients in parallel, each looping POST /v1/releases with no think
/// time (closed loop) over the key protectors, with the health tokens of the attested hosts, for a
/// warm-up and then the measured window. The Guardian's /metrics is scraped at both ends of the
/// window for its own latency view (when an admin client is given).
/// </summary>
public static class ReleaseLoad
{
    /// <summary>One measured answer in this many is kept for the decryption check (and each client's first).</summary>
    public const int CheckEvery = 50;

    public static async Task<ReleaseLoadResult> RunAsync(GuardianHttp http, IReadOnlyList<ReleaseHost> hosts, IReadOnlyList<VmKey> vms, int concurrency,
        TimeSpan warmUp, TimeSpan duration, GuardianHttp? admin, GuardianProcess? guardian, TextWriter progress, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(concurrency, 1);
        if (hosts.Count == 0 || vms.Count == 0)
        {
            throw new ArgumentException("a release run needs hosts and key protectors");
        }
        var errors = new ConcurrentDictionary<string, long>(StringComparer.Ordinal);
        long start = Stopwatch.GetTimestamp();
        long measureFrom = start + (long)(warmUp.TotalSeconds * Stopwatch.Frequency);
        long measureTo = measureFrom + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        var workers = new Worker[concurrency];
        var tasks = new Task[concurrency];
        for (int w = 0; w < concurrency; w++)
        {
            var worker = workers[w] = new Worker(w, concurrency, http, hosts, vms, errors, measureFrom, measureTo);
            tasks[w] = Task.Run(() => worker.RunAsync(ct), ct);
        }

        await Task.Delay(warmUp, ct);
        var metricsFrom = admin is null ? null : await admin.GetTextAsync("metrics", ct);
        var cpuFrom = guardian is null ? null : CpuMeter.Take(guardian);
        for (int s = 1; s <= (int)duration.TotalSeconds; s++)
        {
            long before = workers.Sum(w => w.Released);
            await Task.Delay(TimeSpan.FromSeconds(1), ct);
            progress.WriteLine($"  {s,3} s: {workers.Sum(w => w.Released) - before,6} released/s, errors {errors.Values.Sum()}");
        }
        var rest = TimeSpan.FromSeconds((measureTo - Stopwatch.GetTimestamp()) / (double)Stopwatch.Frequency);
        if (rest > TimeSpan.Zero)
        {
            await Task.Delay(rest, ct);
        }
        var cpuTo = guardian is null ? null : CpuMeter.Take(guardian);
        var metricsTo = admin is null ? null : await admin.GetTextAsync("metrics", ct);
        await Task.WhenAll(tasks);

        // The check runs after the window, so its RSA private-key operations cost the run nothing.
        var samples = workers.SelectMany(w => w.Samples).ToList();
        var problems = samples.Select(s => ReleaseCheck.Problem(s.Answer, hosts[s.Host], vms[s.Vm])).OfType<string>().ToList();
        long released = workers.Sum(w => w.Released);
        return new ReleaseLoadResult(concurrency, duration.TotalSeconds, released, released / duration.TotalSeconds,
            Latency.Of(workers.SelectMany(w => w.Times).ToList()),
            metricsFrom is null ? null : ServerLatency.Between(metricsFrom, metricsTo!),
            new SortedDictionary<string, long>(errors, StringComparer.Ordinal),
            samples.Count, problems,
            cpuFrom is null ? null : CpuUsage.Between(cpuFrom, cpuTo!));
    }

    /// <summary>One POST /v1/releases; a refusal throws <see cref="GuardianError"/> with its problem id.</summary>
    public static Task<ReleaseResponse> ReleaseAsync(GuardianHttp http, ReleaseRequest request, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(http);
        return http.PostAsync("v1/releases", request, ReleaseJson.Default.ReleaseRequest, ReleaseJson.Default.ReleaseResponse, ct);
    }

    private sealed record Sample(ReleaseResponse Answer, int Host, int Vm);

    private sealed class Worker(int index, int concurrency, GuardianHttp http, IReadOnlyList<ReleaseHost> hosts, IReadOnlyList<VmKey> vms,
        ConcurrentDictionary<string, long> errors, long measureFrom, long measureTo)
    {
        public List<double> Times { get; } = new(16384);

        public List<Sample> Samples { get; } = [];

        public long Released;

        public async Task RunAsync(CancellationToken ct)
        {
            for (long i = 0; Stopwatch.GetTimestamp() < measureTo; i++)
            {
                // Client w asks for VMs w, w + C, w + 2C, … in turn, with the hosts' tokens in turn.
                int vm = (int)((index + (i * concurrency)) % vms.Count);
                int host = (int)((index + i) % hosts.Count);
                var request = new ReleaseRequest(vms[vm].KeyProtector, hosts[host].Token);
                long t0 = Stopwatch.GetTimestamp();
                try
                {
                    var answer = await ReleaseAsync(http, request, ct);
                    long t1 = Stopwatch.GetTimestamp();
                    if (t0 >= measureFrom && t1 <= measureTo)
                    {
                        if (Released % CheckEvery == 0)
                        {
                            Samples.Add(new Sample(answer, host, vm));
                        }
                        Released++;
                        Times.Add((t1 - t0) * 1000.0 / Stopwatch.Frequency);
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
    }
}

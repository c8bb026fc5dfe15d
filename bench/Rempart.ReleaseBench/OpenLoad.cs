using System.Collections.Concurrent;
using System.Diagnostics;
using Rempart.Attestation.Protocol;
using Rempart.LoadGen;

namespace Rempart.ReleaseBench;

/// <summary>
/// The open-loop release run: releases are sent on a fixed schedule — request k at
/// <c>start + k / rate</c> — whatever the answers do, each on connection <c>k mod C</c> of C kept-alive
/// TLS connections (one HTTP client each), so C clients share the offered rate. A request's latency
/// is measured from its <em>scheduled</em> time, not from when it could be sent: a request that
/// waited for its connection, or for the scheduler on a busy machine, counts that wait (no
/// coordinated omission). Requests scheduled in the warm-up do not count; those scheduled in the
/// window all count, however late they end — scheduling stops at the window's end and the run
/// waits for every request in flight before the second /metrics and CPU readings (the first
/// readings are taken when the window's first request is due, so the server's view may also hold
/// the few warm-up requests still in flight then).
/// </summary>
public static class OpenLoad
{
    /// <summary>In flight at once beyond this many per connection, the Guardian is not keeping up: the run stops and is invalid.</summary>
    public const int MaxInFlightPerConnection = 20;

    public static async Task<ReleaseLoadResult> RunAsync(IReadOnlyList<GuardianHttp> connections, IReadOnlyList<ReleaseHost> hosts, IReadOnlyList<VmKey> vms,
        double rate, TimeSpan warmUp, TimeSpan duration, GuardianHttp? admin, GuardianProcess? guardian, TextWriter progress, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(connections.Count, 1);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rate);
        if (hosts.Count == 0 || vms.Count == 0)
        {
            throw new ArgumentException("a release run needs hosts and key protectors");
        }
        var errors = new ConcurrentDictionary<string, long>(StringComparer.Ordinal);
        var times = new ConcurrentBag<double>();
        var samples = new ConcurrentBag<(ReleaseResponse Answer, int Host, int Vm)>();
        var inFlight = new List<Task>();
        long current = 0, maxInFlight = 0, released = 0;
        double ticksPerRequest = Stopwatch.Frequency / rate;
        long start = Stopwatch.GetTimestamp();
        long measureFrom = start + (long)(warmUp.TotalSeconds * Stopwatch.Frequency);
        long measureTo = measureFrom + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        int limit = MaxInFlightPerConnection * connections.Count;
        bool overloaded = false;
        string? metricsFrom = null;
        CpuSnapshot? cpuFrom = null;
        long nextReport = measureFrom + Stopwatch.Frequency, releasedAtReport = 0;

        async Task SendAsync(long k, long due, bool measured)
        {
            int vm = (int)(k % vms.Count);
            int host = (int)((k / vms.Count + k) % hosts.Count);
            try
            {
                var answer = await ReleaseLoad.ReleaseAsync(connections[(int)(k % connections.Count)], new ReleaseRequest(vms[vm].KeyProtector, hosts[host].Token), ct);
                long end = Stopwatch.GetTimestamp();
                if (measured)
                {
                    times.Add((end - due) * 1000.0 / Stopwatch.Frequency);
                    if (Interlocked.Increment(ref released) % ReleaseLoad.CheckEvery == 1)
                    {
                        samples.Add((answer, host, vm));
                    }
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
            finally
            {
                Interlocked.Decrement(ref current);
            }
        }

        for (long k = 0; ; k++)
        {
            long due = start + (long)(k * ticksPerRequest);
            if (due >= measureTo)
            {
                break;
            }
            if (metricsFrom is null && due >= measureFrom)
            {
                metricsFrom = admin is null ? "" : await admin.GetTextAsync("metrics", ct);
                cpuFrom = guardian is null ? null : CpuMeter.Take(guardian);
            }
            for (long now = Stopwatch.GetTimestamp(); now < due; now = Stopwatch.GetTimestamp())
            {
                // Sent up to a timer tick late at worst: the latency counts from `due` all the same.
                await Task.Delay(TimeSpan.FromSeconds(Math.Max(0.001, (due - now) / (double)Stopwatch.Frequency)), ct);
            }
            if (due >= nextReport)
            {
                long r = Interlocked.Read(ref released);
                progress.WriteLine($"  {(nextReport - measureFrom) / Stopwatch.Frequency,3} s: {r - releasedAtReport,6} released/s, in flight {Interlocked.Read(ref current)}, errors {errors.Values.Sum()}");
                releasedAtReport = r;
                nextReport += Stopwatch.Frequency;
            }
            long n = Interlocked.Increment(ref current);
            if (n > maxInFlight)
            {
                maxInFlight = n;
            }
            if (n > limit)
            {
                Interlocked.Decrement(ref current);
                overloaded = true;
                errors.AddOrUpdate("client.overloaded", 1, (_, c) => c + 1);
                break;
            }
            inFlight.Add(SendAsync(k, due, due >= measureFrom));
            if (inFlight.Count >= 4096)
            {
                inFlight.RemoveAll(t => t.IsCompleted);
            }
        }
        await Task.WhenAll(inFlight);
        double window = Math.Max(duration.TotalSeconds, (Stopwatch.GetTimestamp() - measureFrom) / (double)Stopwatch.Frequency);
        var cpuTo = cpuFrom is null ? null : CpuMeter.Take(guardian);
        var metricsTo = admin is null || string.IsNullOrEmpty(metricsFrom) ? null : await admin.GetTextAsync("metrics", ct);
        if (overloaded)
        {
            progress.WriteLine($"  stopped: more than {limit} releases in flight at {rate:0}/s offered — the Guardian is not keeping up");
        }

        var checkedSamples = samples.ToList();
        var problems = checkedSamples.Select(s => ReleaseCheck.Problem(s.Answer, hosts[s.Host], vms[s.Vm])).OfType<string>().ToList();
        return new ReleaseLoadResult(connections.Count, window, released, released / window, Latency.Of([.. times]),
            metricsTo is null ? null : ServerLatency.Between(metricsFrom!, metricsTo),
            new SortedDictionary<string, long>(errors, StringComparer.Ordinal),
            checkedSamples.Count, problems,
            cpuFrom is null ? null : CpuUsage.Between(cpuFrom, cpuTo!))
        {
            OfferedPerSecond = rate,
            MaxInFlight = (int)maxInFlight,
        };
    }
}

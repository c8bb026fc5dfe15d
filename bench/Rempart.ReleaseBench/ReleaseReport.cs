using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.LoadGen;

namespace Rempart.ReleaseBench;

/// <summary>The run's settings, as given on the command line (echoed in the report).</summary>
public sealed record BenchSettings(IReadOnlyList<string> Providers, int Hosts, int Vms, int Concurrency, int DurationSeconds, int WarmUpSeconds, double RawSeconds,
    string Load);

/// <summary>
/// One key provider's run: the raw ECDH rates measured just before the loads (the provider's own, and
/// <c>openssl speed ecdhp384</c>'s when measured), the loads (closed and/or open loop), and the audit chain after them.
/// </summary>
public sealed record ProviderResult(string Provider, int Hosts, int Vms, RawRate Raw, double DotNetEcdhWithImportOneThread, IReadOnlyList<ReleaseLoadResult> Loads,
    bool AuditChainOk, long AuditRecords, OpenSslRate? OpenSsl = null)
{
    public bool Valid => Loads.Count > 0 && Loads.All(l => l.Valid) && AuditChainOk;

    /// <summary>Releases per second as a share of the provider's raw all-core ECDH rate (goal for the file provider: ≥ 0.5).</summary>
    public double RatioToRawAllCores(ReleaseLoadResult load) => load.ReleasesPerSecond / Raw.PerSecondAllCores;

    public double RatioToRawOneThread(ReleaseLoadResult load) => load.ReleasesPerSecond / Raw.PerSecondOneThread;

    /// <summary>Releases per second as a share of <c>openssl speed -multi CORES -elapsed ecdhp384</c> (0: not measured).</summary>
    public double RatioToOpenSslAllCores(ReleaseLoadResult load) => OpenSsl is { PerSecondAllCores: > 0 } o ? load.ReleasesPerSecond / o.PerSecondAllCores : 0;

    /// <summary>openssl's CPU µs per derivation ÷ the Guardian's CPU µs per release (0: not measured).</summary>
    public double CpuRatioToOpenSsl(ReleaseLoadResult load) =>
        OpenSsl is { CpuMicroseconds: > 0 } o && GuardianCpuMicrosecondsPerRelease(load) is > 0 and var g ? o.CpuMicroseconds / g : 0;

    /// <summary>The Guardian's CPU time per release, in µs (from /proc, over the window).</summary>
    public static double GuardianCpuMicrosecondsPerRelease(ReleaseLoadResult load) =>
        load.Cpu is { } c && load.Released > 0 ? c.GuardianSeconds * 1e6 / load.Released : 0;

    /// <summary>
    /// Releases per Guardian CPU-second as a share of raw ECDHs per CPU-second: the ratio the goal
    /// asks for, on CPU time, which a shared machine disturbs much less than wall-clock rates.
    /// </summary>
    public double CpuRatio(ReleaseLoadResult load) =>
        GuardianCpuMicrosecondsPerRelease(load) is > 0 and var g ? Raw.CpuMicroseconds / g : 0;
}

/// <summary>The human table and the JSON document.</summary>
public static class ReleaseReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static string Table(IReadOnlyList<ProviderResult> results, IReadOnlyList<StepCost> steps, BenchSettings s)
    {
        var sb = new StringBuilder();
        sb.AppendLine(Inv, $"Guardian key release load — {s.Hosts} attested software hosts, {s.Vms} key protectors, {s.Concurrency} clients/connections, {s.WarmUpSeconds} s warm-up + {s.DurationSeconds} s per load ({s.Load}), HTTP/1.1 over TLS (pinned)");
        sb.AppendLine(Inv, $"machine: {Environment.ProcessorCount} cores, shared by the client and the Guardian; .NET {Environment.Version}");
        sb.AppendLine();
        sb.AppendLine("| provider | load | releases/s | client p50 / p99 ms | server p50 / p99 ms (p99 bucket ≤) | raw ECDH/s 1 thread | raw ECDH/s all cores | releases ÷ raw (all cores) | ÷ raw (1 thread) | openssl speed ECDH/s 1 process / all cores | releases ÷ openssl (all cores) | errors | checked | valid |");
        sb.AppendLine("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        foreach (var r in results)
        {
            foreach (var l in r.Loads)
            {
                var server = l.Server is { } v ? $"{v.P50Ms:0.00} / {v.P99Ms:0.00} (≤ {v.P99UpperMs:0.#})" : "-";
                sb.AppendLine(Inv, $"| {r.Provider} | {l.Mode} | {l.ReleasesPerSecond:0} | {l.Client.P50:0.0} / {l.Client.P99:0.0} | {server} | {r.Raw.PerSecondOneThread:0} | {r.Raw.PerSecondAllCores:0} | {r.RatioToRawAllCores(l):0.00} | {r.RatioToRawOneThread(l):0.00} | {(r.OpenSsl is { } o ? $"{o.PerSecondOneProcess:0} / {o.PerSecondAllCores:0}" : "-")} | {r.RatioToOpenSslAllCores(l):0.00} | {l.ErrorCount} | {l.Checked}{(l.CheckProblems.Count > 0 ? $" ({l.CheckProblems.Count} WRONG)" : "")} | {(l.Valid ? "yes" : "NO")} |");
            }
        }
        sb.AppendLine();
        sb.AppendLine("| provider | load | server mean ms | server releases (window) | max in flight | CPU µs per release: client / Guardian / other | client share of CPU | machine busy | raw ECDH CPU µs | raw ECDH CPU µs ÷ Guardian CPU µs per release | openssl ECDH CPU µs | ÷ Guardian CPU µs per release | audit chain |");
        sb.AppendLine("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        foreach (var r in results)
        {
            foreach (var l in r.Loads)
            {
                double per = l.Released > 0 ? 1e6 / l.Released : 0;
                var cpu = l.Cpu is { } c ? $"{c.ClientSeconds * per:0} / {c.GuardianSeconds * per:0} / {c.OtherSeconds * per:0}" : "-";
                sb.AppendLine(Inv, $"| {r.Provider} | {l.Mode} | {l.Server?.MeanMs:0.00} | {l.Server?.Released} | {(l.MaxInFlight is { } m ? m.ToString(Inv) : l.Concurrency.ToString(Inv))} | {cpu} | {l.Cpu?.ClientShare * 100:0} % | {l.Cpu?.BusyShare * 100:0} % | {r.Raw.CpuMicroseconds:0} | {r.CpuRatio(l):0.00} | {r.OpenSsl?.CpuMicroseconds:0} | {r.CpuRatioToOpenSsl(l):0.00} | {(r.AuditChainOk ? "ok" : "BROKEN")}, {r.AuditRecords} records |");
            }
        }
        sb.AppendLine();
        foreach (var r in results)
        {
            sb.AppendLine(Inv, $"{r.Provider}: raw = {r.Raw.What}; .NET ECDH with the peer key imported per call: {r.DotNetEcdhWithImportOneThread:0}/s one thread");
            if (r.OpenSsl is { } o)
            {
                sb.AppendLine(Inv, $"{r.Provider}: openssl speed -seconds {o.Seconds} ecdhp384: {o.PerSecondOneProcess:0}/s one process (per CPU-second, {o.CpuMicroseconds:0} µs each); -multi {o.Cores} -elapsed: {o.PerSecondAllCores:0}/s");
            }
        }
        if (steps.Count > 0)
        {
            double derive = steps[0].Microseconds;
            sb.AppendLine();
            sb.AppendLine("Where a release's CPU goes (CPU time on one thread in this process, steps interleaved):");
            sb.AppendLine();
            sb.AppendLine("| step | µs | × raw ECDH | what |");
            sb.AppendLine("| --- | ---: | ---: | --- |");
            foreach (var step in steps)
            {
                sb.AppendLine(Inv, $"| {step.Step} | {step.Microseconds:0} | {step.Microseconds / derive:0.00} | {step.What} |");
            }
            double hit = StepCosts.FileProviderCryptoMicroseconds(steps, cached: true), miss = StepCosts.FileProviderCryptoMicroseconds(steps, cached: false);
            sb.AppendLine();
            sb.AppendLine(Inv, $"file provider's crypto per release, from the steps: {hit:0} µs = {hit / derive:0.00} × the raw ECDH with the KP's key cached, {miss:0} µs = {miss / derive:0.00} × without; the rest of the Guardian's CPU per release is HTTP/TLS, JSON, the store and the audit append");
        }
        foreach (var (r, l) in results.SelectMany(r => r.Loads.Select(l => (r, l))))
        {
            if (l.ErrorCount > 0)
            {
                sb.AppendLine(Inv, $"{r.Provider}, {l.Mode}: refusals and errors by id: {string.Join(", ", l.Errors.Select(e => $"{e.Key} × {e.Value}"))}");
            }
            if (l.CheckProblems.Count > 0)
            {
                sb.AppendLine(Inv, $"{r.Provider}, {l.Mode}: wrong answers: {string.Join("; ", l.CheckProblems.Distinct().Take(5))}");
            }
        }
        return sb.ToString();
    }

    public static string Json(IReadOnlyList<ProviderResult> results, IReadOnlyList<StepCost> steps, BenchSettings s)
    {
        var doc = new JsonObject
        {
            ["settings"] = new JsonObject
            {
                ["providers"] = new JsonArray(s.Providers.Select(p => (JsonNode)p).ToArray()),
                ["hosts"] = s.Hosts,
                ["vms"] = s.Vms,
                ["concurrency"] = s.Concurrency,
                ["durationSeconds"] = s.DurationSeconds,
                ["warmUpSeconds"] = s.WarmUpSeconds,
                ["rawSeconds"] = s.RawSeconds,
                ["load"] = s.Load,
            },
            ["machine"] = new JsonObject { ["cores"] = Environment.ProcessorCount, ["dotnet"] = Environment.Version.ToString() },
            ["providers"] = new JsonArray(results.Select(r => (JsonNode)new JsonObject
            {
                ["provider"] = r.Provider,
                ["valid"] = r.Valid,
                ["loads"] = new JsonArray(r.Loads.Select(l => (JsonNode)LoadJson(r, l)).ToArray()),
                ["raw"] = new JsonObject
                {
                    ["what"] = r.Raw.What,
                    ["cores"] = r.Raw.Cores,
                    ["perSecondOneThread"] = Round(r.Raw.PerSecondOneThread),
                    ["perSecondAllCores"] = Round(r.Raw.PerSecondAllCores),
                    ["cpuMicroseconds"] = Round(r.Raw.CpuMicroseconds),
                    ["dotNetEcdhWithImportPerSecondOneThread"] = Round(r.DotNetEcdhWithImportOneThread),
                },
                ["opensslSpeedEcdhP384"] = r.OpenSsl is { } o ? new JsonObject
                {
                    ["seconds"] = o.Seconds,
                    ["perSecondOneProcess"] = Round(o.PerSecondOneProcess),
                    ["cpuMicroseconds"] = Round(o.CpuMicroseconds),
                    ["cores"] = o.Cores,
                    ["perSecondAllCores"] = Round(o.PerSecondAllCores),
                } : null,
                ["auditChainOk"] = r.AuditChainOk,
                ["auditRecords"] = r.AuditRecords,
            }).ToArray()),
            ["steps"] = new JsonArray(steps.Select(step => (JsonNode)new JsonObject
            {
                ["step"] = step.Step,
                ["microseconds"] = Round(step.Microseconds),
                ["what"] = step.What,
            }).ToArray()),
            ["fileProviderCryptoMicrosecondsPerRelease"] = steps.Count > 0 ? new JsonObject
            {
                ["peerKeyCached"] = Round(StepCosts.FileProviderCryptoMicroseconds(steps, cached: true)),
                ["peerKeyImported"] = Round(StepCosts.FileProviderCryptoMicroseconds(steps, cached: false)),
            } : null,
        };
        return doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private static JsonObject LoadJson(ProviderResult r, ReleaseLoadResult l) => new()
    {
        ["mode"] = l.OfferedPerSecond is null ? "closed" : "open",
        ["offeredPerSecond"] = l.OfferedPerSecond,
        ["maxInFlight"] = l.MaxInFlight,
        ["valid"] = l.Valid,
        ["releasesPerSecond"] = Round(l.ReleasesPerSecond),
        ["released"] = l.Released,
        ["windowSeconds"] = l.WindowSeconds,
        ["concurrency"] = l.Concurrency,
        ["clientLatencyMs"] = new JsonObject
        {
            ["count"] = l.Client.Count,
            ["mean"] = Round(l.Client.Mean, 2),
            ["p50"] = Round(l.Client.P50, 2),
            ["p90"] = Round(l.Client.P90, 2),
            ["p99"] = Round(l.Client.P99, 2),
            ["max"] = Round(l.Client.Max, 2),
        },
        ["serverLatencyMs"] = l.Server is { } v ? new JsonObject
        {
            ["count"] = v.Count,
            ["released"] = v.Released,
            ["mean"] = Round(v.MeanMs, 3),
            ["p50"] = Round(v.P50Ms, 3),
            ["p99"] = Round(v.P99Ms, 3),
            ["p99BucketUpperBound"] = v.P99UpperMs,
        } : null,
        ["ratioToRawAllCores"] = Math.Round(r.RatioToRawAllCores(l), 4),
        ["ratioToRawOneThread"] = Math.Round(r.RatioToRawOneThread(l), 4),
        ["ratioToOpenSslAllCores"] = Math.Round(r.RatioToOpenSslAllCores(l), 4),
        ["cpuRatioToOpenSsl"] = Math.Round(r.CpuRatioToOpenSsl(l), 4),
        ["errors"] = new JsonObject(l.Errors.Select(e => KeyValuePair.Create(e.Key, (JsonNode?)e.Value))),
        ["checked"] = l.Checked,
        ["checkProblems"] = new JsonArray(l.CheckProblems.Distinct().Take(10).Select(p => (JsonNode)p).ToArray()),
        ["cpuSeconds"] = l.Cpu is { } c ? new JsonObject
        {
            ["client"] = Round(c.ClientSeconds, 2),
            ["guardian"] = Round(c.GuardianSeconds, 2),
            ["other"] = Round(c.OtherSeconds, 2),
            ["machineBusy"] = Round(c.MachineBusySeconds, 2),
            ["machine"] = Round(c.MachineSeconds, 2),
            ["clientShare"] = Math.Round(c.ClientShare, 4),
        } : null,
        ["guardianCpuMicrosecondsPerRelease"] = Round(ProviderResult.GuardianCpuMicrosecondsPerRelease(l)),
        ["cpuRatio"] = Math.Round(r.CpuRatio(l), 4),
    };

    private static double Round(double v, int digits = 1) => Math.Round(v, digits);
}

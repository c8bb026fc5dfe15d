using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.LoadGen;

namespace Rempart.ReleaseBench;

/// <summary>The run's settings, as given on the command line (echoed in the report).</summary>
public sealed record BenchSettings(IReadOnlyList<string> Providers, int Hosts, int Vms, int Concurrency, int DurationSeconds, int WarmUpSeconds, double RawSeconds);

/// <summary>One key provider's run: the load, the raw ECDH rate measured just before it, and the audit chain after it.</summary>
public sealed record ProviderResult(string Provider, int Hosts, int Vms, RawRate Raw, double DotNetEcdhWithImportOneThread, ReleaseLoadResult Load,
    bool AuditChainOk, long AuditRecords)
{
    public bool Valid => Load.Valid && AuditChainOk;

    /// <summary>Releases per second as a share of the provider's raw all-core ECDH rate (goal for the file provider: ≥ 0.5).</summary>
    public double RatioToRawAllCores => Load.ReleasesPerSecond / Raw.PerSecondAllCores;

    public double RatioToRawOneThread => Load.ReleasesPerSecond / Raw.PerSecondOneThread;

    /// <summary>The Guardian's CPU time per release, in µs (from /proc, over the window).</summary>
    public double GuardianCpuMicrosecondsPerRelease => Load.Cpu is { } c && Load.Released > 0 ? c.GuardianSeconds * 1e6 / Load.Released : 0;

    /// <summary>
    /// Releases per Guardian CPU-second as a share of raw ECDHs per CPU-second: the ratio the goal
    /// asks for, on CPU time, which a shared machine disturbs much less than wall-clock rates.
    /// </summary>
    public double CpuRatio => GuardianCpuMicrosecondsPerRelease > 0 ? Raw.CpuMicroseconds / GuardianCpuMicrosecondsPerRelease : 0;
}

/// <summary>The human table and the JSON document.</summary>
public static class ReleaseReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static string Table(IReadOnlyList<ProviderResult> results, IReadOnlyList<StepCost> steps, BenchSettings s)
    {
        var sb = new StringBuilder();
        sb.AppendLine(Inv, $"Guardian key release load — {s.Hosts} attested software hosts, {s.Vms} key protectors, {s.Concurrency} concurrent clients, {s.WarmUpSeconds} s warm-up + {s.DurationSeconds} s, HTTP/1.1 over TLS (pinned)");
        sb.AppendLine(Inv, $"machine: {Environment.ProcessorCount} cores, shared by the client and the Guardian; .NET {Environment.Version}");
        sb.AppendLine();
        sb.AppendLine("| provider | releases/s | client p50 / p99 ms | server p50 / p99 ms (p99 bucket ≤) | raw ECDH/s 1 thread | raw ECDH/s all cores | releases ÷ raw (all cores) | ÷ raw (1 thread) | errors | checked | valid |");
        sb.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        foreach (var r in results)
        {
            var l = r.Load;
            var server = l.Server is { } v ? $"{v.P50Ms:0.00} / {v.P99Ms:0.00} (≤ {v.P99UpperMs:0.#})" : "-";
            sb.AppendLine(Inv, $"| {r.Provider} | {l.ReleasesPerSecond:0} | {l.Client.P50:0.0} / {l.Client.P99:0.0} | {server} | {r.Raw.PerSecondOneThread:0} | {r.Raw.PerSecondAllCores:0} | {r.RatioToRawAllCores:0.00} | {r.RatioToRawOneThread:0.00} | {l.ErrorCount} | {l.Checked}{(l.CheckProblems.Count > 0 ? $" ({l.CheckProblems.Count} WRONG)" : "")} | {(r.Valid ? "yes" : "NO")} |");
        }
        sb.AppendLine();
        sb.AppendLine("| provider | server mean ms | server releases (window) | CPU µs per release: client / Guardian / other | client share of CPU | machine busy | raw ECDH CPU µs | raw ECDH CPU µs ÷ Guardian CPU µs per release | audit chain |");
        sb.AppendLine("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |");
        foreach (var r in results)
        {
            var l = r.Load;
            double per = l.Released > 0 ? 1e6 / l.Released : 0;
            var cpu = l.Cpu is { } c ? $"{c.ClientSeconds * per:0} / {c.GuardianSeconds * per:0} / {c.OtherSeconds * per:0}" : "-";
            sb.AppendLine(Inv, $"| {r.Provider} | {l.Server?.MeanMs:0.00} | {l.Server?.Released} | {cpu} | {l.Cpu?.ClientShare * 100:0} % | {l.Cpu?.BusyShare * 100:0} % | {r.Raw.CpuMicroseconds:0} | {r.CpuRatio:0.00} | {(r.AuditChainOk ? "ok" : "BROKEN")}, {r.AuditRecords} records |");
        }
        sb.AppendLine();
        foreach (var r in results)
        {
            sb.AppendLine(Inv, $"{r.Provider}: raw = {r.Raw.What}; .NET ECDH with the peer key imported per call (as the file provider does): {r.DotNetEcdhWithImportOneThread:0}/s one thread");
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
            double crypto = StepCosts.FileProviderCryptoMicroseconds(steps);
            sb.AppendLine();
            sb.AppendLine(Inv, $"file provider's crypto per release, from the steps: {crypto:0} µs = {crypto / derive:0.0} × the raw ECDH; the rest of the Guardian's CPU per release is HTTP/TLS, JSON, the store and the audit append");
        }
        foreach (var r in results.Where(r => r.Load.ErrorCount > 0))
        {
            sb.AppendLine(Inv, $"{r.Provider}: refusals and errors by id: {string.Join(", ", r.Load.Errors.Select(e => $"{e.Key} × {e.Value}"))}");
        }
        foreach (var r in results.Where(r => r.Load.CheckProblems.Count > 0))
        {
            sb.AppendLine(Inv, $"{r.Provider}: wrong answers: {string.Join("; ", r.Load.CheckProblems.Distinct().Take(5))}");
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
            },
            ["machine"] = new JsonObject { ["cores"] = Environment.ProcessorCount, ["dotnet"] = Environment.Version.ToString() },
            ["providers"] = new JsonArray(results.Select(r => (JsonNode)new JsonObject
            {
                ["provider"] = r.Provider,
                ["valid"] = r.Valid,
                ["releasesPerSecond"] = Round(r.Load.ReleasesPerSecond),
                ["released"] = r.Load.Released,
                ["windowSeconds"] = r.Load.WindowSeconds,
                ["concurrency"] = r.Load.Concurrency,
                ["clientLatencyMs"] = new JsonObject
                {
                    ["count"] = r.Load.Client.Count,
                    ["mean"] = Round(r.Load.Client.Mean, 2),
                    ["p50"] = Round(r.Load.Client.P50, 2),
                    ["p90"] = Round(r.Load.Client.P90, 2),
                    ["p99"] = Round(r.Load.Client.P99, 2),
                    ["max"] = Round(r.Load.Client.Max, 2),
                },
                ["serverLatencyMs"] = r.Load.Server is { } v ? new JsonObject
                {
                    ["count"] = v.Count,
                    ["released"] = v.Released,
                    ["mean"] = Round(v.MeanMs, 3),
                    ["p50"] = Round(v.P50Ms, 3),
                    ["p99"] = Round(v.P99Ms, 3),
                    ["p99BucketUpperBound"] = v.P99UpperMs,
                } : null,
                ["raw"] = new JsonObject
                {
                    ["what"] = r.Raw.What,
                    ["cores"] = r.Raw.Cores,
                    ["perSecondOneThread"] = Round(r.Raw.PerSecondOneThread),
                    ["perSecondAllCores"] = Round(r.Raw.PerSecondAllCores),
                    ["cpuMicroseconds"] = Round(r.Raw.CpuMicroseconds),
                    ["dotNetEcdhWithImportPerSecondOneThread"] = Round(r.DotNetEcdhWithImportOneThread),
                },
                ["ratioToRawAllCores"] = Math.Round(r.RatioToRawAllCores, 4),
                ["ratioToRawOneThread"] = Math.Round(r.RatioToRawOneThread, 4),
                ["errors"] = new JsonObject(r.Load.Errors.Select(e => KeyValuePair.Create(e.Key, (JsonNode?)e.Value))),
                ["checked"] = r.Load.Checked,
                ["checkProblems"] = new JsonArray(r.Load.CheckProblems.Distinct().Take(10).Select(p => (JsonNode)p).ToArray()),
                ["cpuSeconds"] = r.Load.Cpu is { } c ? new JsonObject
                {
                    ["client"] = Round(c.ClientSeconds, 2),
                    ["guardian"] = Round(c.GuardianSeconds, 2),
                    ["other"] = Round(c.OtherSeconds, 2),
                    ["machineBusy"] = Round(c.MachineBusySeconds, 2),
                    ["machine"] = Round(c.MachineSeconds, 2),
                    ["clientShare"] = Math.Round(c.ClientShare, 4),
                } : null,
                ["guardianCpuMicrosecondsPerRelease"] = Round(r.GuardianCpuMicrosecondsPerRelease),
                ["cpuRatio"] = Math.Round(r.CpuRatio, 4),
                ["auditChainOk"] = r.AuditChainOk,
                ["auditRecords"] = r.AuditRecords,
            }).ToArray()),
            ["steps"] = new JsonArray(steps.Select(step => (JsonNode)new JsonObject
            {
                ["step"] = step.Step,
                ["microseconds"] = Round(step.Microseconds),
                ["what"] = step.What,
            }).ToArray()),
            ["fileProviderCryptoMicrosecondsPerRelease"] = steps.Count > 0 ? Round(StepCosts.FileProviderCryptoMicroseconds(steps)) : null,
        };
        return doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private static double Round(double v, int digits = 1) => Math.Round(v, digits);
}

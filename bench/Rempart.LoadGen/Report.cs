using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rempart.LoadGen;

/// <summary>One store's run: the load, the raw crypto rates measured just before it, and the audit chain's state after it.</summary>
public sealed record StoreResult(string Store, int Hosts, CryptoRates Crypto, LoadResult Load, bool AuditChainOk, long AuditRecords)
{
    /// <summary>The run is valid when nothing was refused or failed and the audit chain verifies.</summary>
    public bool Valid => Load.ErrorCount == 0 && AuditChainOk;

    /// <summary>Attestations per second as a share of the machine's raw all-core ECDSA P-256 verify rate.</summary>
    public double RatioToRawVerify => Load.AttestationsPerSecond / Crypto.VerifyPerSecondAllCores;

    /// <summary>Attestations per second as a share of the signature-only ceiling (2 verifies + 1 sign per attestation, all cores).</summary>
    public double RatioToCryptoCeiling => Load.AttestationsPerSecond / Crypto.CryptoCeiling;
}

/// <summary>The human table and the JSON document.</summary>
public static class Report
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static string Table(IReadOnlyList<StoreResult> results, RunSettings settings)
    {
        var sb = new StringBuilder();
        var load = settings.OfferedRate is { } offered ? $"{offered:0} attestations/s offered" : "closed loop, no think time";
        sb.AppendLine(Inv, $"Guardian attestation load — {settings.Hosts} software hosts, {settings.Concurrency} concurrent, {load}, {settings.WarmUpSeconds} s warm-up + {settings.DurationSeconds} s, HTTP/{(settings.Http2 ? "2" : "1.1")} over TLS (pinned), log {settings.EventLogName}");
        sb.AppendLine(Inv, $"machine: {Environment.ProcessorCount} cores, shared by the load generator, the Guardian and PostgreSQL; .NET {Environment.Version}");
        sb.AppendLine();
        sb.AppendLine("| store | att/s | p50 ms | p90 ms | p99 ms | max ms | errors | raw P-256 verify/s (all cores) | att/s ÷ raw verify | crypto ceiling att/s | % of ceiling | valid |");
        sb.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        foreach (var r in results)
        {
            var l = r.Load;
            sb.AppendLine(Inv, $"| {r.Store} | {l.AttestationsPerSecond:0} | {l.Cycle.P50:0.0} | {l.Cycle.P90:0.0} | {l.Cycle.P99:0.0} | {l.Cycle.Max:0.0} | {l.ErrorCount} | {r.Crypto.VerifyPerSecondAllCores:0} | {r.RatioToRawVerify:0.000} | {r.Crypto.CryptoCeiling:0} | {r.RatioToCryptoCeiling * 100:0.0} % | {(r.Valid ? "yes" : "NO")} |");
        }
        sb.AppendLine();
        sb.AppendLine("| store | nonce p50/p99 ms | evidence p50/p99 ms | client build µs | CPU µs per attestation: client / Guardian / PostgreSQL backends / other | client share of CPU | machine busy | audit chain |");
        sb.AppendLine("| --- | --- | --- | ---: | --- | ---: | ---: | --- |");
        foreach (var r in results)
        {
            var l = r.Load;
            double per = l.Affirmed > 0 ? 1e6 / l.Affirmed : 0;
            sb.AppendLine(Inv, $"| {r.Store} | {l.NonceRequest.P50:0.0} / {l.NonceRequest.P99:0.0} | {l.EvidenceRequest.P50:0.0} / {l.EvidenceRequest.P99:0.0} | {l.ClientBuildMicroseconds:0} | {l.Cpu.ClientSeconds * per:0} / {l.Cpu.GuardianSeconds * per:0} / {l.Cpu.PostgresSeconds * per:0} / {l.Cpu.OtherSeconds * per:0} | {l.Cpu.ClientShare * 100:0} % | {l.Cpu.BusyShare * 100:0} % | {(r.AuditChainOk ? "ok" : "BROKEN")}, {r.AuditRecords} records |");
        }
        sb.AppendLine();
        sb.AppendLine(Inv, $"raw rates (one thread): P-256 verify {results.FirstOrDefault()?.Crypto.VerifyPerSecondOneThread:0}/s, sign {results.FirstOrDefault()?.Crypto.SignPerSecondOneThread:0}/s; the Guardian's signature work per attestation: 2 verifies + 1 sign");
        foreach (var r in results.Where(r => r.Load.ErrorCount > 0))
        {
            sb.AppendLine(Inv, $"{r.Store}: refusals and errors by id: {string.Join(", ", r.Load.Errors.Select(e => $"{e.Key} × {e.Value}"))}");
        }
        return sb.ToString();
    }

    public static string Json(IReadOnlyList<StoreResult> results, RunSettings settings)
    {
        var doc = new JsonObject
        {
            ["settings"] = JsonSerializer.SerializeToNode(settings, ReportJson.Default.RunSettings),
            ["machine"] = new JsonObject { ["cores"] = Environment.ProcessorCount, ["dotnet"] = Environment.Version.ToString() },
            ["stores"] = new JsonArray(results.Select(r => (JsonNode)new JsonObject
            {
                ["store"] = r.Store,
                ["valid"] = r.Valid,
                ["hosts"] = r.Hosts,
                ["attestationsPerSecond"] = Round(r.Load.AttestationsPerSecond),
                ["affirmed"] = r.Load.Affirmed,
                ["windowSeconds"] = r.Load.WindowSeconds,
                ["concurrency"] = r.Load.Concurrency,
                ["latencyMs"] = new JsonObject
                {
                    ["cycle"] = Lat(r.Load.Cycle),
                    ["nonceRequest"] = Lat(r.Load.NonceRequest),
                    ["evidenceRequest"] = Lat(r.Load.EvidenceRequest),
                },
                ["clientBuildMicroseconds"] = Round(r.Load.ClientBuildMicroseconds),
                ["errors"] = new JsonObject(r.Load.Errors.Select(e => KeyValuePair.Create(e.Key, (JsonNode?)e.Value))),
                ["crypto"] = new JsonObject
                {
                    ["cores"] = r.Crypto.Cores,
                    ["p256VerifyPerSecondOneThread"] = Round(r.Crypto.VerifyPerSecondOneThread),
                    ["p256VerifyPerSecondAllCores"] = Round(r.Crypto.VerifyPerSecondAllCores),
                    ["p256SignPerSecondOneThread"] = Round(r.Crypto.SignPerSecondOneThread),
                    ["guardianCryptoMicrosecondsPerAttestation"] = Round(r.Crypto.GuardianCryptoSecondsPerAttestation * 1e6),
                    ["cryptoCeilingAttestationsPerSecond"] = Round(r.Crypto.CryptoCeiling),
                },
                ["ratioToRawVerify"] = Math.Round(r.RatioToRawVerify, 4),
                ["ratioToCryptoCeiling"] = Math.Round(r.RatioToCryptoCeiling, 4),
                ["cpuSeconds"] = new JsonObject
                {
                    ["client"] = Round(r.Load.Cpu.ClientSeconds, 2),
                    ["guardian"] = Round(r.Load.Cpu.GuardianSeconds, 2),
                    ["postgres"] = Round(r.Load.Cpu.PostgresSeconds, 2),
                    ["other"] = Round(r.Load.Cpu.OtherSeconds, 2),
                    ["machineBusy"] = Round(r.Load.Cpu.MachineBusySeconds, 2),
                    ["machine"] = Round(r.Load.Cpu.MachineSeconds, 2),
                    ["clientShare"] = Math.Round(r.Load.Cpu.ClientShare, 4),
                },
                ["auditChainOk"] = r.AuditChainOk,
                ["auditRecords"] = r.AuditRecords,
            }).ToArray()),
        };
        return doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private static JsonObject Lat(Latency l) => new()
    {
        ["count"] = l.Count,
        ["mean"] = Round(l.Mean, 2),
        ["p50"] = Round(l.P50, 2),
        ["p90"] = Round(l.P90, 2),
        ["p99"] = Round(l.P99, 2),
        ["max"] = Round(l.Max, 2),
    };

    private static double Round(double v, int digits = 1) => Math.Round(v, digits);
}

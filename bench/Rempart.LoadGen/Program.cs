using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Serialization;
using Npgsql;

namespace Rempart.LoadGen;

/// <summary>The run's settings, as given on the command line (echoed in the report).</summary>
public sealed record RunSettings(
    [property: JsonPropertyName("hosts")] int Hosts,
    [property: JsonPropertyName("concurrency")] int Concurrency,
    [property: JsonPropertyName("durationSeconds")] int DurationSeconds,
    [property: JsonPropertyName("warmUpSeconds")] int WarmUpSeconds,
    [property: JsonPropertyName("offeredRate")] double? OfferedRate,
    [property: JsonPropertyName("stores")] IReadOnlyList<string> Stores,
    [property: JsonPropertyName("http2")] bool Http2,
    [property: JsonPropertyName("eventLog")] string EventLogName,
    [property: JsonPropertyName("enrolParallelism")] int EnrolParallelism);

[JsonSerializable(typeof(RunSettings))]
internal sealed partial class ReportJson : JsonSerializerContext;

/// <summary>
/// <c>rempart-loadgen --hosts N --concurrency C --duration S --store sqlite|postgres|both</c>: the
/// Guardian load benchmark (bench/README.md). Progress goes to stderr, the report to stdout.
/// </summary>
public static class Program
{
    private const string Help = """
        Usage: rempart-loadgen [--hosts N] [--concurrency C] [--duration S] [--warmup S] [--rate R]
                               [--store sqlite|postgres|both] [--postgres CONNECTION] [--guardian-dll PATH]
                               [--eventlog FILE] [--policy FILE] [--http2] [--format table|json]
                               [--enrol-parallelism P] [--keep]

        Starts the real Guardian (one process per store), enrols N software-TPM hosts through its API,
        approves them, then runs C of them concurrently, each looping nonce -> evidence -> verdict, for
        S seconds after a warm-up. Reports attestations/s and latency next to the machine's raw ECDSA
        P-256 verify rate, measured in the same run.

          --hosts N            simulated hosts enrolled (default 200)
          --concurrency C      hosts attesting at once, at most N (default 200, or N if smaller)
          --duration S         measured seconds (default 20); --warmup S before it (default 60: on
                               2 shared cores the Guardian's JIT is still tiering up for ~50 s)
          --rate R             offer R attestations/s in total (each host paced); default: closed loop,
                               no think time (latency is then concurrency / throughput)
          --store              sqlite, postgres or both (default both)
          --postgres CONN      PostgreSQL server to use (a fresh database is created in it and dropped
                               after); default: the private cluster of scripts/postgres.sh
          --guardian-dll PATH  a built rempart-guardian.dll (default: scripts/rempart-guardian, which
                               builds it, Release, when stale)
          --eventlog FILE      the firmware log the hosts booted (default: the fixture
                               go-tpm-tools__cos-85-amd-sev.bin, Secure Boot on, sha1/sha256/sha384)
          --policy FILE        the host group's policy (default: Secure Boot required + PCR 7 baseline)
          --http2              HTTP/2 instead of kept-alive HTTP/1.1 connections
          --format             table (default) or json
          --keep               keep the Guardians' data folders

        """;

    public static async Task<int> Main(string[] args)
    {
        Options o;
        try
        {
            o = Options.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            Console.Error.Write(Help);
            return 2;
        }
        if (o.Help)
        {
            Console.Out.Write(Help);
            return 0;
        }
        try
        {
            var results = await RunAsync(o, Console.Error);
            Console.Out.Write(o.Json ? Report.Json(results, o.Settings) + "\n" : Report.Table(results, o.Settings));
            return results.All(r => r.Valid) ? 0 : 1;
        }
        catch (Exception e) when (e is InvalidOperationException or GuardianError or IOException or NpgsqlException)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 3;
        }
    }

    private static async Task<List<StoreResult>> RunAsync(Options o, TextWriter progress)
    {
        var logPath = o.EventLog ?? Path.Combine(RepoPaths.Fixtures, "go-tpm-tools__cos-85-amd-sev.bin");
        var boot = new SimulatedBoot(await File.ReadAllBytesAsync(logPath));
        var policy = o.PolicyFile is null ? Fleet.DefaultPolicy(boot) : await File.ReadAllTextAsync(o.PolicyFile);
        using var ca = new SoftwareEkCa();
        progress.WriteLine($"loadgen: making {o.Hosts} software TPMs (RSA-2048 EK + certificate, P-256 AK, RSA-2048 binding key each)");
        var tpms = Fleet.Make(o.Hosts, ca, boot, progress);
        var results = new List<StoreResult>();
        try
        {
            foreach (var store in o.Stores)
            {
                results.Add(await RunStoreAsync(store, o, ca, tpms, policy, progress));
            }
        }
        finally
        {
            foreach (var t in tpms)
            {
                t.Dispose();
            }
        }
        return results;
    }

    private static async Task<StoreResult> RunStoreAsync(string store, Options o, SoftwareEkCa ca, IReadOnlyList<SoftwareTpm> tpms, string policy, TextWriter progress)
    {
        var dataDir = Directory.CreateTempSubdirectory($"rempart-loadgen-{store}-").FullName;
        var casDir = Path.Combine(dataDir, "trusted-ek-cas");
        ca.WritePem(casDir);
        string? database = null, server = null, connection = null;
        if (store == "postgres")
        {
            server = o.Postgres ?? await PostgresFromScriptAsync();
            database = "rempart_loadgen_" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4));
            await ExecuteAsync(server, $"CREATE DATABASE {database}");
            connection = new NpgsqlConnectionStringBuilder(server) { Database = database }.ConnectionString;
        }
        try
        {
            progress.WriteLine($"loadgen [{store}]: starting the Guardian (data {dataDir})");
            await using var guardian = await GuardianProcess.StartAsync(o.GuardianDll, dataDir, casDir, connection, TimeSpan.FromMinutes(5));
            progress.WriteLine($"loadgen [{store}]: Guardian pid {guardian.ProcessId} at {guardian.Url}, certificate {guardian.Fingerprint[..16]}…");
            using var http = new GuardianHttp(guardian.Url, guardian.Fingerprint, o.Concurrency, o.Http2);
            using var admin = new GuardianHttp(guardian.Url, guardian.Fingerprint, 16, false, guardian.AdminToken);
            var sw = Stopwatch.StartNew();
            var hosts = await Fleet.EnrolAsync(http, admin, tpms, "loadgen", policy, o.EnrolParallelism, progress, CancellationToken.None);
            progress.WriteLine($"loadgen [{store}]: {hosts.Count} hosts enrolled and approved in {sw.Elapsed.TotalSeconds:0.0} s");

            progress.WriteLine($"loadgen [{store}]: measuring raw ECDSA P-256 rates (Guardian idle)");
            var crypto = CryptoRates.Measure(TimeSpan.FromSeconds(1));
            progress.WriteLine($"loadgen [{store}]: verify {crypto.VerifyPerSecondOneThread:0}/s (1 thread), {crypto.VerifyPerSecondAllCores:0}/s (all cores), sign {crypto.SignPerSecondOneThread:0}/s");

            progress.WriteLine($"loadgen [{store}]: {o.Concurrency} hosts attesting, {o.WarmUp.TotalSeconds:0} s warm-up then {o.Duration.TotalSeconds:0} s measured");
            var load = await LoadRun.RunAsync(http, hosts, o.Concurrency, o.WarmUp, o.Duration, o.Rate, guardian, database, progress, CancellationToken.None);

            var verify = await admin.GetTextAsync("v1/audit/verify");
            var node = System.Text.Json.Nodes.JsonNode.Parse(verify)!;
            var result = new StoreResult(store, hosts.Count, crypto, load, node["ok"]!.GetValue<bool>(), node["records"]!.GetValue<long>());
            progress.WriteLine($"loadgen [{store}]: {load.AttestationsPerSecond:0} attestations/s, p50 {load.Cycle.P50:0.0} ms, p99 {load.Cycle.P99:0.0} ms, errors {load.ErrorCount}, audit chain {(result.AuditChainOk ? "ok" : "BROKEN")} ({result.AuditRecords} records)");
            return result;
        }
        finally
        {
            if (database is not null)
            {
                NpgsqlConnection.ClearAllPools();
                await ExecuteAsync(server!, $"DROP DATABASE IF EXISTS {database} WITH (FORCE)");
            }
            if (!o.Keep)
            {
                try
                {
                    Directory.Delete(dataDir, true);
                }
                catch (IOException)
                {
                }
            }
        }
    }

    /// <summary>Starts (or finds) the private PostgreSQL cluster of scripts/postgres.sh; its connection string is the script's stdout.</summary>
    private static async Task<string> PostgresFromScriptAsync()
    {
        var psi = new ProcessStartInfo("bash", [Path.Combine(RepoPaths.Root, "scripts", "postgres.sh")])
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
            WorkingDirectory = RepoPaths.Root,
        };
        using var p = Process.Start(psi)!;
        var output = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        if (p.ExitCode != 0 || string.IsNullOrWhiteSpace(output))
        {
            throw new InvalidOperationException($"scripts/postgres.sh failed (exit {p.ExitCode}); pass --postgres CONNECTION");
        }
        return output.Trim();
    }

    private static async Task ExecuteAsync(string connection, string sql)
    {
        await using var c = new NpgsqlConnection(connection);
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, c);
        await cmd.ExecuteNonQueryAsync();
    }

    private sealed record Options(int Hosts, int Concurrency, TimeSpan Duration, TimeSpan WarmUp, double? Rate, IReadOnlyList<string> Stores, string? Postgres,
        string? GuardianDll, string? EventLog, string? PolicyFile, bool Http2, bool Json, int EnrolParallelism, bool Keep, bool Help)
    {
        public RunSettings Settings => new(Hosts, Concurrency, (int)Duration.TotalSeconds, (int)WarmUp.TotalSeconds, Rate, Stores, Http2,
            Path.GetFileName(EventLog ?? "go-tpm-tools__cos-85-amd-sev.bin"), EnrolParallelism);

        public static Options Parse(string[] args)
        {
            int hosts = 200, duration = 20, warmUp = 60, enrolParallelism = 16;
            int? concurrency = null, rate = null;
            string store = "both";
            string? postgres = null, dll = null, log = null, policy = null, format = "table";
            bool http2 = false, keep = false, help = false;
            for (int i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                int Int(int min)
                {
                    var name = args[i];
                    var v = Next();
                    return int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n >= min ? n : throw new ArgumentException($"{name} '{v}': a whole number ≥ {min}");
                }
                switch (args[i])
                {
                    case "--hosts": hosts = Int(1); break;
                    case "--concurrency": concurrency = Int(1); break;
                    case "--duration": duration = Int(1); break;
                    case "--warmup": warmUp = Int(0); break;
                    case "--rate": rate = Int(1); break;
                    case "--store": store = Next(); break;
                    case "--postgres": postgres = Next(); break;
                    case "--guardian-dll": dll = Path.GetFullPath(Next()); break;
                    case "--eventlog": log = Path.GetFullPath(Next()); break;
                    case "--policy": policy = Path.GetFullPath(Next()); break;
                    case "--http2": http2 = true; break;
                    case "--format": format = Next(); break;
                    case "--enrol-parallelism": enrolParallelism = Int(1); break;
                    case "--keep": keep = true; break;
                    case "--help" or "-h": help = true; break;
                    default: throw new ArgumentException($"unknown option {args[i]}");
                }
            }
            var stores = store switch
            {
                "sqlite" => new[] { "sqlite" },
                "postgres" => ["postgres"],
                "both" => ["sqlite", "postgres"],
                _ => throw new ArgumentException($"--store '{store}': sqlite, postgres or both"),
            };
            if (format is not ("table" or "json"))
            {
                throw new ArgumentException($"--format '{format}': table or json");
            }
            int c = concurrency ?? Math.Min(200, hosts);
            if (c > hosts)
            {
                throw new ArgumentException($"--concurrency {c} is more than --hosts {hosts}: a host attests one nonce at a time");
            }
            if (dll is not null && !File.Exists(dll))
            {
                throw new ArgumentException($"--guardian-dll {dll}: no such file");
            }
            return new Options(hosts, c, TimeSpan.FromSeconds(duration), TimeSpan.FromSeconds(warmUp), rate, stores, postgres, dll, log, policy, http2,
                format == "json", enrolParallelism, keep, help);
        }
    }
}

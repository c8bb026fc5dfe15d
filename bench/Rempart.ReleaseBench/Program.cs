using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Rempart.LoadGen;

namespace Rempart.ReleaseBench;

/// <summary>
/// <c>rempart-releasebench [--providers file|pkcs11|both] [--vms N] [--concurrency C] …</c>: the key
/// release benchmark (bench/README.md). Progress goes to stderr, the report to stdout; the exit code
/// is 0 only when every run was valid (no refusal or error, sampled answers open to the right key,
/// audit chain intact).
/// </summary>
public static class Program
{
    private const string Help = """
        Usage: rempart-releasebench [--providers file|pkcs11|both] [--hosts H] [--vms N] [--concurrency C]
                                    [--duration S] [--warmup S] [--raw-seconds S] [--openssl-seconds S] [--step-seconds S] [--guardian-dll PATH]
                                    [--load closed|open|both] [--open-rate R] [--open-share F]
                                    [--pkcs11-module PATH] [--format table|json] [--keep]

        For each key provider, starts the real Guardian (pkcs11: on a fresh SoftHSM2 token made by
        scripts/softhsm.sh), enrols, approves and attests H software hosts, makes N key protectors from
        its signed metadata, measures the raw P-384 ECDH rate of that provider, then runs C clients
        looping POST /v1/releases for S seconds after a warm-up (closed loop), then — hosts attested
        again — an open loop: releases sent at a fixed rate over C connections, latency from each
        request's scheduled time. Reports releases/s, client and server-side (GET /metrics) latency,
        and releases/s as a share of the raw ECDH rate.

          --providers      file, pkcs11 or both (default both)
          --hosts H        attested software hosts whose tokens the clients use (default 4)
          --vms N          key protectors (default 200)
          --concurrency C  closed loop: clients releasing at once; open loop: connections (default 100)
          --duration S     measured seconds (default 20); --warmup S before it (default 15: the Guardian's
                           JIT tiers up meanwhile); together at most 100 s per load (health tokens are
                           not refreshed during a load)
          --load           closed, open or both (default both: closed, then open)
          --open-rate R    open loop's offered releases/s (default: --open-share of the closed loop's rate)
          --open-share F   open loop's rate as a share of the closed loop's releases/s (default 0.5)
          --raw-seconds S  time for each raw ECDH measurement (default 2)
          --openssl-seconds S  openssl speed -seconds S ecdhp384, one process then -multi (cores) -elapsed,
                           the independent raw rate (default 3; 0: skip)
          --step-seconds S time for the release path's per-step crypto costs, one thread (default 6; 0: skip)
          --guardian-dll   a built rempart-guardian.dll (default: scripts/rempart-guardian, Release)
          --pkcs11-module  the SoftHSM2 module (default: the one scripts/softhsm.sh finds)
          --format         table (default) or json
          --keep           keep the Guardians' data folders and the SoftHSM2 tokens

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
            var results = new List<ProviderResult>();
            IReadOnlyList<StepCost> steps = [];
            foreach (var provider in o.Providers)
            {
                var (result, s) = await RunProviderAsync(provider, o, Console.Error, measureSteps: steps.Count == 0 && o.StepTime > TimeSpan.Zero);
                results.Add(result);
                steps = s ?? steps;
            }
            Console.Out.Write(o.Json ? ReleaseReport.Json(results, steps, o.Settings) + "\n" : ReleaseReport.Table(results, steps, o.Settings));
            return results.All(r => r.Valid) ? 0 : 1;
        }
        catch (Exception e) when (e is InvalidOperationException or GuardianError or IOException)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 3;
        }
    }

    private static async Task<(ProviderResult, IReadOnlyList<StepCost>?)> RunProviderAsync(string provider, Options o, TextWriter progress, bool measureSteps)
    {
        var dataDir = Directory.CreateTempSubdirectory($"rempart-releasebench-{provider}-").FullName;
        var casDir = Path.Combine(dataDir, "trusted-ek-cas");
        string? hsmDir = null;
        try
        {
            using var ca = new SoftwareEkCa();
            ca.WritePem(casDir);
            var extra = new List<string>();
            (string Module, string PinFile)? hsm = null;
            if (provider == "pkcs11")
            {
                hsmDir = Directory.CreateTempSubdirectory("rempart-releasebench-softhsm-").FullName;
                string module = "";
                foreach (var label in new[] { "guardian", "raw" })
                {
                    module = await ScriptAsync("softhsm.sh", hsmDir, label);
                }
                module = o.Pkcs11Module ?? module;
                // The Guardian (a child) and this process's own module load both read SOFTHSM2_CONF.
                var conf = Path.Combine(hsmDir, "softhsm2.conf");
                Environment.SetEnvironmentVariable("SOFTHSM2_CONF", conf);
                if (SetEnv("SOFTHSM2_CONF", conf, 1) != 0)
                {
                    throw new InvalidOperationException("setenv(SOFTHSM2_CONF) failed");
                }
                extra.AddRange(["--key-provider", "pkcs11", "--pkcs11-module", module, "--pkcs11-token", "guardian",
                    "--pkcs11-pin-file", Path.Combine(hsmDir, "guardian.user-pin")]);
                hsm = (module, Path.Combine(hsmDir, "raw.user-pin"));
            }

            progress.WriteLine($"releasebench [{provider}]: starting the Guardian (data {dataDir})");
            await using var guardian = await GuardianProcess.StartAsync(o.GuardianDll, dataDir, casDir, null, TimeSpan.FromMinutes(5), extra);
            progress.WriteLine($"releasebench [{provider}]: Guardian pid {guardian.ProcessId} at {guardian.Url}");
            using var http = new GuardianHttp(guardian.Url, guardian.Fingerprint, o.Concurrency);
            using var admin = new GuardianHttp(guardian.Url, guardian.Fingerprint, 4, false, guardian.AdminToken);

            var boot = new SimulatedBoot(await File.ReadAllBytesAsync(Path.Combine(RepoPaths.Fixtures, "go-tpm-tools__cos-85-amd-sev.bin")));
            var hosts = await ReleaseFleet.EnrolAsync(http, admin, ca, boot, o.Hosts, progress, CancellationToken.None);
            try
            {
                var sw = Stopwatch.StartNew();
                var vms = ReleaseFleet.KeyProtectors(await http.GetTextAsync("v1/guardian/metadata"), o.Vms);
                progress.WriteLine($"releasebench [{provider}]: {vms.Count} key protectors made in {sw.Elapsed.TotalSeconds:0.0} s");

                progress.WriteLine($"releasebench [{provider}]: raw ECDH P-384 rates (Guardian idle)");
                var raw = hsm is { } h
                    ? RawEcdh.Pkcs11(h.Module, "raw", h.PinFile, o.RawTime)
                    : RawEcdh.DotNet(o.RawTime);
                double withImport = RawEcdh.DotNetWithImport(o.RawTime);
                progress.WriteLine($"releasebench [{provider}]: {raw.What}: {raw.PerSecondOneThread:0}/s one thread, {raw.PerSecondAllCores:0}/s all cores");
                OpenSslRate? openssl = null;
                if (o.OpenSslSeconds > 0)
                {
                    openssl = OpenSslRate.Measure(o.OpenSslSeconds);
                    progress.WriteLine($"releasebench [{provider}]: openssl speed ecdhp384: {openssl.PerSecondOneProcess:0}/s one process, {openssl.PerSecondAllCores:0}/s all cores");
                }
                IReadOnlyList<StepCost>? steps = null;
                if (measureSteps)
                {
                    progress.WriteLine($"releasebench [{provider}]: the release path's crypto steps, one thread ({o.StepTime.TotalSeconds:0} s)");
                    steps = StepCosts.Measure(o.StepTime, hosts[0].Tpm.BindingKeyPublic);
                }

                var loads = new List<ReleaseLoadResult>();
                if (o.Load is "closed" or "both")
                {
                    await ReleaseFleet.AttestAsync(http, hosts, CancellationToken.None);
                    progress.WriteLine($"releasebench [{provider}]: closed loop, {o.Concurrency} clients releasing, {o.WarmUp.TotalSeconds:0} s warm-up then {o.Duration.TotalSeconds:0} s measured");
                    loads.Add(await ReleaseLoad.RunAsync(http, hosts, vms, o.Concurrency, o.WarmUp, o.Duration, admin, guardian, progress, CancellationToken.None));
                    Report(provider, loads[^1], progress);
                }
                if (o.Load is "open" or "both")
                {
                    double rate = o.OpenRate ?? Math.Max(1, Math.Round(o.OpenShare * loads[0].ReleasesPerSecond));
                    var connections = Enumerable.Range(0, o.Concurrency).Select(_ => new GuardianHttp(guardian.Url, guardian.Fingerprint, 1)).ToList();
                    try
                    {
                        await ReleaseFleet.AttestAsync(http, hosts, CancellationToken.None);
                        progress.WriteLine($"releasebench [{provider}]: open loop, {rate:0} releases/s offered over {o.Concurrency} connections, {o.WarmUp.TotalSeconds:0} s warm-up then {o.Duration.TotalSeconds:0} s measured");
                        loads.Add(await OpenLoad.RunAsync(connections, hosts, vms, rate, o.WarmUp, o.Duration, admin, guardian, progress, CancellationToken.None));
                        Report(provider, loads[^1], progress);
                    }
                    finally
                    {
                        connections.ForEach(c => c.Dispose());
                    }
                }

                if (loads.Any(l => l.ErrorCount > 0))
                {
                    // A 500 says only "internal": the cause is in the Guardian's log (type and message, never key material).
                    progress.WriteLine($"releasebench [{provider}]: errors; the Guardian's last lines:\n{guardian.LastOutput()}");
                }
                var verify = System.Text.Json.Nodes.JsonNode.Parse(await admin.GetTextAsync("v1/audit/verify"))!;
                var result = new ProviderResult(provider, o.Hosts, vms.Count, raw, withImport, loads, verify["ok"]!.GetValue<bool>(), verify["records"]!.GetValue<long>(), openssl);
                return (result, steps);
            }
            finally
            {
                foreach (var host in hosts)
                {
                    host.Dispose();
                }
            }
        }
        finally
        {
            if (!o.Keep)
            {
                foreach (var dir in new[] { dataDir, hsmDir }.OfType<string>())
                {
                    try
                    {
                        Directory.Delete(dir, true);
                    }
                    catch (IOException)
                    {
                    }
                }
            }
        }
    }

    private static void Report(string provider, ReleaseLoadResult load, TextWriter progress) =>
        progress.WriteLine($"releasebench [{provider}]: {load.Mode}: {load.ReleasesPerSecond:0} releases/s, client p50 {load.Client.P50:0.0} ms p99 {load.Client.P99:0.0} ms, server p99 ~{load.Server?.P99Ms:0.0} ms, errors {load.ErrorCount}, checked {load.Checked} ({load.CheckProblems.Count} wrong)");

    /// <summary>Runs a scripts/ helper; its trimmed stdout.</summary>
    private static async Task<string> ScriptAsync(string script, params string[] args)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, UseShellExecute = false, WorkingDirectory = RepoPaths.Root };
        psi.ArgumentList.Add(Path.Combine(RepoPaths.Root, "scripts", script));
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi)!;
        var output = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        if (p.ExitCode != 0 || string.IsNullOrWhiteSpace(output))
        {
            throw new InvalidOperationException($"scripts/{script} failed (exit {p.ExitCode}); run scripts/setup.sh");
        }
        return output.Trim();
    }

    [DllImport("libc", EntryPoint = "setenv")]
    private static extern int SetEnv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);

    private sealed record Options(IReadOnlyList<string> Providers, int Hosts, int Vms, int Concurrency, TimeSpan Duration, TimeSpan WarmUp,
        TimeSpan RawTime, TimeSpan StepTime, string? GuardianDll, string? Pkcs11Module, bool Json, bool Keep, bool Help,
        string Load, double? OpenRate, double OpenShare, int OpenSslSeconds)
    {
        public BenchSettings Settings => new(Providers, Hosts, Vms, Concurrency, (int)Duration.TotalSeconds, (int)WarmUp.TotalSeconds, RawTime.TotalSeconds, Load);

        public static Options Parse(string[] args)
        {
            int hosts = 4, vms = 200, concurrency = 100, duration = 20, warmUp = 15, raw = 2, stepSeconds = 6, opensslSeconds = 3;
            string providers = "both", format = "table", load = "both";
            double? openRate = null;
            double openShare = 0.5;
            string? dll = null, module = null;
            bool keep = false, help = false;
            for (int i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                double Positive()
                {
                    var name = args[i];
                    var v = Next();
                    return double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && d > 0 && double.IsFinite(d) ? d : throw new ArgumentException($"{name} '{v}': a number > 0");
                }
                int Int(int min)
                {
                    var name = args[i];
                    var v = Next();
                    return int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n >= min ? n : throw new ArgumentException($"{name} '{v}': a whole number ≥ {min}");
                }
                switch (args[i])
                {
                    case "--providers": providers = Next(); break;
                    case "--hosts": hosts = Int(1); break;
                    case "--vms": vms = Int(1); break;
                    case "--concurrency": concurrency = Int(1); break;
                    case "--duration": duration = Int(1); break;
                    case "--warmup": warmUp = Int(0); break;
                    case "--raw-seconds": raw = Int(1); break;
                    case "--step-seconds": stepSeconds = Int(0); break;
                    case "--openssl-seconds": opensslSeconds = Int(0); break;
                    case "--guardian-dll": dll = Path.GetFullPath(Next()); break;
                    case "--pkcs11-module": module = Path.GetFullPath(Next()); break;
                    case "--format": format = Next(); break;
                    case "--load": load = Next(); break;
                    case "--open-rate": openRate = Positive(); break;
                    case "--open-share": openShare = Positive(); break;
                    case "--keep": keep = true; break;
                    case "--help" or "-h": help = true; break;
                    default: throw new ArgumentException($"unknown option {args[i]}");
                }
            }
            var list = providers switch
            {
                "file" => new[] { "file" },
                "pkcs11" => ["pkcs11"],
                "both" => ["file", "pkcs11"],
                _ => throw new ArgumentException($"--providers '{providers}': file, pkcs11 or both"),
            };
            if (format is not ("table" or "json"))
            {
                throw new ArgumentException($"--format '{format}': table or json");
            }
            if (load is not ("closed" or "open" or "both"))
            {
                throw new ArgumentException($"--load '{load}': closed, open or both");
            }
            if (load == "open" && openRate is null)
            {
                throw new ArgumentException("--load open needs --open-rate (with both, the rate defaults to --open-share of the closed loop's)");
            }
            if (duration + warmUp > 100)
            {
                // Hosts attest once before the run; the Guardian marks a host stale after 2 × 60 s without attesting.
                throw new ArgumentException("--warmup + --duration must be at most 100 s");
            }
            if (dll is not null && !File.Exists(dll))
            {
                throw new ArgumentException($"--guardian-dll {dll}: no such file");
            }
            return new Options(list, hosts, vms, concurrency, TimeSpan.FromSeconds(duration), TimeSpan.FromSeconds(warmUp), TimeSpan.FromSeconds(raw),
                TimeSpan.FromSeconds(stepSeconds), dll, module, format == "json", keep, help, load, openRate, openShare, opensslSeconds);
        }
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Rempart.Host.Migration;
using Rempart.Host.Qemu;
using Rempart.Tpm.Tests.Infrastructure;
using Rempart.VmBench;

// bench/migration.sh runs this (bench/README.md, "Live migration"): issue 7 §3. One guest, booted
// once, migrated back and forth between two QEMUs on this machine, alternating plain QEMU migration
// over TCP (the baseline) and the agent's encrypted relay (MigrationRelay + SecureChannel: QEMU →
// unix socket → AES-256-GCM records over TCP → unix socket → QEMU), in the same run, the order
// alternating per round. Same guest, firmware, swtpm, disks (shared files: the transport is
// measured, not the bundle copy) and migration parameters on both paths.
// --modes adds QEMU's own transports for comparison: tls (QEMU's TLS, GnuTLS, with a PSK made for the
// run: a bench-only key file in the run's temporary folder, never the agent's design), tls-mfd and
// plain-mfd (the same over --channels multifd channels).
// Every destination QEMU preallocates its RAM (prealloc=on) before the migration starts: this machine
// is itself a VM whose memory its hypervisor backs on first touch, and a destination faulting in fresh
// pages during the stream spent ~4 CPU s per GB in clear_page (perf), whichever transport ran.
if (args.Length > 0 && args[0] == "--relay-only")
{
    // bench/migration.sh --relay-only [MiB] [rounds]
    return await Rempart.MigrationBench.RelayOnly.RunAsync(
        args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 2048,
        args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 4);
}
var o = Options.Parse(args);
if (o is null)
{
    Console.Error.WriteLine("usage: rempart-migrationbench --guests DIR [--rounds 3] [--memory 1024] [--modes plain,relay[,tls,tls-mfd,plain-mfd]] [--channels 2]");
    return 2;
}
foreach (var tool in new[] { "qemu-system-x86_64", "swtpm", "swtpm_setup", "setsid" })
{
    Tool.Which(tool);
}
var dir = Directory.CreateTempSubdirectory("hmb-").FullName;
Console.WriteLine($"# rempart-migrationbench {DateTime.UtcNow:yyyy-MM-ddTHH:mm:ssZ}, {Environment.ProcessorCount} CPUs, load {File.ReadAllText("/proc/loadavg").Trim()}, guest {o.MemoryMiB} MiB");
var runs = new List<PlainVm.Run>();
var ramFiles = new List<string>();
try
{
    var guest = Path.Combine(dir, "guest.img");
    File.Copy(Path.Combine(o.Guests, "guest.img"), guest);
    var marker = Path.Combine(dir, "marker.img");
    File.Copy(Path.Combine(o.Guests, "marker.img"), marker);
    var markerText = File.ReadAllText(Path.Combine(o.Guests, "marker.txt")).Trim();
    await using (var f = new FileStream(marker, FileMode.Open, FileAccess.Write))
    {
        await f.WriteAsync(Encoding.ASCII.GetBytes($"REMPART-MARKER {markerText}\nREMPART-MODE stay\n"));
    }
    // Both QEMUs open the same files (shared storage); locking off, as two QEMUs of one VM on one host.
    (string, string)[] disks = [(guest + ",file.locking=off", "raw"), (marker + ",file.locking=off", "raw")];
    var vms = new[] { new PlainVm(Path.Combine(dir, "a")), new PlainVm(Path.Combine(dir, "b")) };
    int current = 0;
    // The idle test guest touches little of its RAM, and QEMU sends untouched (zero) pages as a flag:
    // the first VM's RAM is a private mapping of a file of random bytes, so that the pages the guest
    // never wrote still hold data and every migration carries about the whole RAM.
    var ramFile = Path.Combine("/dev/shm", "rempart-migbench-" + Path.GetFileName(dir));
    await using (var r = new FileStream(ramFile, FileMode.CreateNew, FileAccess.Write))
    {
        var chunk = new byte[1 << 20];
        for (int i = 0; i < o.MemoryMiB; i++)
        {
            RandomNumberGenerator.Fill(chunk);
            await r.WriteAsync(chunk);
        }
    }
    string[] Ram(bool first) => first
        ? ["-object", $"memory-backend-file,id=ram0,size={o.MemoryMiB}M,mem-path={ramFile},share=off", "-machine", "memory-backend=ram0"]
        : ["-object", $"memory-backend-ram,id=ram0,size={o.MemoryMiB}M,prealloc=on", "-machine", "memory-backend=ram0"];
    var run = await vms[0].StartAsync(disks, o.MemoryMiB, 1, Ram(first: true));
    ramFiles.Add(ramFile); // removed at the end: QEMU may map it after its QMP socket appears
    runs.Add(run);
    int Tick()
    {
        using var fs = new FileStream(marker, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var buf = new byte[64];
        fs.Position = 512 * 1024;
        int n = fs.Read(buf);
        var s = Encoding.ASCII.GetString(buf, 0, n);
        return s.StartsWith("REMPART-TICK ", StringComparison.Ordinal) && int.TryParse(s[13..].Split(' ', '\n')[0], CultureInfo.InvariantCulture, out var t) ? t : 0;
    }
    await WaitAsync(() => Tick() >= 2, TimeSpan.FromMinutes(5), "the guest counts (stay mode)");
    Console.WriteLine($"# guest up, tick {Tick()}");
    var results = new List<Result>();
    // Round -1, not counted: one plain migration moves the guest off the file-backed RAM of the first VM
    // (whose untouched pages QEMU reads through the file mapping: ~240 MB/s every run); every counted
    // migration is then between two VMs with anonymous RAM.
    for (int round = -1; round < o.Rounds; round++)
    {
        foreach (var mode in round < 0 ? ["plain"] : round % 2 == 0 ? o.Modes : o.Modes.Reverse().ToArray())
        {
            int next = 1 - current;
            var r = await MigrateAsync(vms[current], run, vms[next], disks, o.MemoryMiB, mode, o.Channels, dir, Ram(first: false), runs);
            int tick = Tick();
            await WaitAsync(() => Tick() > tick, TimeSpan.FromSeconds(30), "the guest counts after the migration");
            await PlainVm.StopAsync(run, TimeSpan.FromSeconds(20));
            run = r.Destination;
            current = next;
            if (round >= 0)
            {
                results.Add(r.Result);
            }
            Console.WriteLine($"{(round < 0 ? "warm-up (not counted)" : "round " + round)} {mode,-9}: {r.Result.Bytes / 1e6,8:0.0} MB in {r.Result.TotalMs,6} ms (QEMU total), {r.Result.MBps,7:0.0} MB/s end to end, downtime {r.Result.DowntimeMs,4} ms, to guest running {r.Result.WallMs,6} ms; {r.Result.Cpu}");
        }
    }
    static double Median(IEnumerable<double> v)
    {
        var a = v.Order().ToArray();
        return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
    }
    var plain = results.Where(r => r.Mode == "plain").ToList();
    Console.WriteLine();
    Console.WriteLine($"| median of {o.Rounds} | plain QEMU (TCP) | " + string.Join(" | ", o.Modes.Where(m => m != "plain").Select(m => $"{m} | {m} / plain")) + " |");
    Console.WriteLine("| --- | --- |" + string.Concat(o.Modes.Where(m => m != "plain").Select(_ => " --- | --- |")));
    void Row(string what, Func<Result, double> f, string unit) =>
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {what} | {Median(plain.Select(f)):0.0} {unit} | ") + string.Join(" | ", o.Modes.Where(m => m != "plain").Select(m =>
        {
            var enc = results.Where(r => r.Mode == m).ToList();
            return string.Create(CultureInfo.InvariantCulture, $"{Median(enc.Select(f)):0.0} {unit} | {Median(enc.Select(f)) / Median(plain.Select(f)):0.00}");
        })) + " |");
    Row("throughput (stream bytes / time to guest running at the destination)", r => r.MBps, "MB/s");
    Row("QEMU total time", r => r.TotalMs, "ms");
    Row("downtime (QEMU)", r => r.DowntimeMs, "ms");
    Row("migrate command to guest running at the destination", r => r.WallMs, "ms");
    Row("bytes of migration stream", r => r.Bytes / 1e6, "MB");
    Row("CPU s per GB, both QEMUs + relay", r => (r.Cpu.Source + r.Cpu.Destination + r.Cpu.Relay) / (r.Bytes / 1e9), "s");
    Row("CPU s per GB, the relay alone", r => r.Cpu.Relay / (r.Bytes / 1e9), "s");
    Row("machine busy during the migration", r => 100 * r.Cpu.MachineBusy / Math.Max(0.01, r.Cpu.MachineTotal), "%");
    return 0;
}
finally
{
    foreach (var r in runs)
    {
        try
        {
            if (!r.Qemu.HasExited)
            {
                r.Qemu.Kill();
            }
            if (!r.Swtpm.HasExited)
            {
                r.Swtpm.Kill();
            }
        }
        catch (InvalidOperationException)
        {
        }
    }
    ramFiles.ForEach(File.Delete);
    Directory.Delete(dir, recursive: true);
}

static async Task<(Result Result, PlainVm.Run Destination)> MigrateAsync(PlainVm source, PlainVm.Run sourceRun, PlainVm target,
    IReadOnlyList<(string, string)> disks, int memoryMiB, string mode, int channels, string dir, string[] ram, List<PlainVm.Run> runs)
{
    bool viaRelay = mode == "relay"; // the agent's encrypted relay; every other mode is one of QEMU's own transports
    bool tls = mode.StartsWith("tls", StringComparison.Ordinal);
    bool multifd = mode.EndsWith("mfd", StringComparison.Ordinal);
    int port = FreePort();
    var inSock = Path.Combine(dir, "in.sock");
    var outSock = Path.Combine(dir, "out.sock");
    File.Delete(inSock);
    File.Delete(outSock);
    var dest = await target.StartAsync(disks, memoryMiB, 1, [.. ram, "-incoming", viaRelay ? "unix:" + inSock : "defer"]);
    runs.Add(dest); // killed at the end whatever happens
    await using var src = await QmpClient.ConnectAsync(source.QmpSocket, TimeSpan.FromSeconds(30));
    await using var dst = await QmpClient.ConnectAsync(target.QmpSocket, TimeSpan.FromSeconds(30));
    // The agent's parameters, on both paths.
    await src.ExecuteAsync("migrate-set-parameters", new JsonObject { ["max-bandwidth"] = 8L << 30, ["downtime-limit"] = 300 });
    if (viaRelay)
    {
        // The relay's QEMU stream is the plain single-channel one, whatever the previous round set.
        await src.ExecuteAsync("migrate-set-capabilities", new JsonObject { ["capabilities"] = new JsonArray(new JsonObject { ["capability"] = "multifd", ["state"] = false }) });
        await src.ExecuteAsync("migrate-set-parameters", new JsonObject { ["tls-creds"] = "" });
    }
    else
    {
        // QEMU's own transports: TLS (GnuTLS, a PSK made for this migration) and/or multifd channels.
        var id = "tls" + port;
        var pskDir = Path.Combine(dir, "psk");
        if (tls)
        {
            Directory.CreateDirectory(pskDir);
            File.WriteAllText(Path.Combine(pskDir, "keys.psk"), "qemu:" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32)) + "\n");
        }
        foreach (var (q, endpoint) in new[] { (src, "client"), (dst, "server") })
        {
            await q.ExecuteAsync("migrate-set-capabilities", new JsonObject { ["capabilities"] = new JsonArray(new JsonObject { ["capability"] = "multifd", ["state"] = multifd }) });
            var p = new JsonObject { ["tls-creds"] = tls ? id : "" };
            if (multifd)
            {
                p["multifd-channels"] = channels;
            }
            if (tls)
            {
                var creds = new JsonObject { ["qom-type"] = "tls-creds-psk", ["id"] = id, ["endpoint"] = endpoint, ["dir"] = pskDir };
                if (endpoint == "client")
                {
                    creds["username"] = "qemu";
                }
                await q.ExecuteAsync("object-add", creds);
            }
            await q.ExecuteAsync("migrate-set-parameters", p);
        }
        await dst.ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = $"tcp:127.0.0.1:{port}" });
    }
    var cpu = CpuSample.Take(sourceRun.Qemu, dest.Qemu);
    var clock = Stopwatch.StartNew();
    Task relay = Task.CompletedTask;
    if (!viaRelay)
    {
        await src.ExecuteAsync("migrate", new JsonObject { ["uri"] = $"tcp:127.0.0.1:{port}" });
    }
    else
    {
        // The agent's relay: a unix socket for QEMU, sealed records over TCP, a unix socket into the destination's QEMU.
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(outSock));
        listener.Listen(1);
        await src.ExecuteAsync("migrate", new JsonObject { ["uri"] = "unix:" + outSock });
        var fromQemu = await listener.AcceptAsync();
        var (sending, receiving) = await Rempart.MigrationBench.RelayOnly.LoopbackChannelsAsync();
        var intoQemu = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await intoQemu.ConnectAsync(new UnixDomainSocketEndPoint(inSock));
        var intoStream = new NetworkStream(intoQemu, ownsSocket: true);
        relay = Task.WhenAll(
            Task.Run(async () =>
            {
                var n = await MigrationRelay.PumpOutAsync(fromQemu, sending, CancellationToken.None);
                Console.WriteLine($"  relay: {sending.SentRecords} records, {n / Math.Max(1, sending.SentRecords) / 1024} KiB each on average");
                await sending.SendControlAsync(new JsonObject { ["type"] = "stream-end", ["bytes"] = n }, CancellationToken.None);
                fromQemu.Dispose();
            }),
            Task.Run(async () =>
            {
                await MigrationRelay.PumpInAsync(receiving, intoStream, [], CancellationToken.None);
                intoQemu.Shutdown(SocketShutdown.Send);
            }));
        _ = relay.ContinueWith(async _ =>
        {
            await sending.DisposeAsync();
            await receiving.DisposeAsync();
            await intoStream.DisposeAsync();
        }, TaskScheduler.Default);
    }
    JsonNode info;
    while (true)
    {
        info = (await src.ExecuteAsync("query-migrate"))!;
        var status = info["status"]?.GetValue<string>();
        if (status is "completed")
        {
            break;
        }
        if (status is "failed" or "cancelled")
        {
            throw new InvalidOperationException("migration " + info.ToJsonString());
        }
        await Task.Delay(20);
    }
    await relay;
    await WaitAsync(() => dst.ExecuteAsync("query-status").GetAwaiter().GetResult()?["status"]?.GetValue<string>() == "running", TimeSpan.FromSeconds(60), "the destination runs the guest");
    long wall = clock.ElapsedMilliseconds;
    var used = CpuSample.Take(sourceRun.Qemu, dest.Qemu) - cpu;
    await src.ExecuteAsync("quit");
    long total = info["total-time"]!.GetValue<long>();
    long bytes = info["ram"]!["transferred"]!.GetValue<long>();
    return (new Result(mode, bytes, total, info["downtime"]?.GetValue<long>() ?? -1, wall, bytes / 1e6 / (wall / 1000.0), used), dest);
}

static async Task WaitAsync(Func<bool> condition, TimeSpan timeout, string what)
{
    var sw = Stopwatch.StartNew();
    while (!condition())
    {
        if (sw.Elapsed > timeout)
        {
            throw new TimeoutException($"timed out waiting until {what}");
        }
        await Task.Delay(100);
    }
}

static int FreePort()
{
    var l = new TcpListener(IPAddress.Loopback, 0);
    l.Start();
    int p = ((IPEndPoint)l.LocalEndpoint).Port;
    l.Stop();
    return p;
}

internal sealed record Result(string Mode, long Bytes, long TotalMs, long DowntimeMs, long WallMs, double MBps, CpuSample Cpu);

/// <summary>
/// CPU seconds over one migration: the source QEMU, the destination QEMU, this process (the relay, on
/// the encrypted path), and the whole machine's busy time (/proc/stat) — CPU per GB moved is steadier
/// than wall-clock on a shared machine, and machine-busy near the core count says the path is CPU-bound.
/// </summary>
internal sealed record CpuSample(double Source, double Destination, double Relay, double MachineBusy, double MachineTotal)
{
    public static CpuSample Take(Process source, Process destination)
    {
        var fields = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
            .Select(f => double.Parse(f, CultureInfo.InvariantCulture) / 100.0).ToArray(); // USER_HZ = 100
        double idle = fields[3] + fields[4]; // idle + iowait
        double all = fields.Take(8).Sum();
        source.Refresh();
        destination.Refresh();
        return new CpuSample(source.TotalProcessorTime.TotalSeconds, destination.TotalProcessorTime.TotalSeconds,
            Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds, all - idle, all);
    }

    public static CpuSample operator -(CpuSample a, CpuSample b) =>
        new(a.Source - b.Source, a.Destination - b.Destination, a.Relay - b.Relay, a.MachineBusy - b.MachineBusy, a.MachineTotal - b.MachineTotal);

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"CPU s: source QEMU {Source:0.00}, destination QEMU {Destination:0.00}, relay {Relay:0.00}; machine busy {MachineBusy:0.00} of {MachineTotal:0.00} ({100 * MachineBusy / Math.Max(0.01, MachineTotal):0}%)");
}

internal sealed record Options(string Guests, int Rounds, int MemoryMiB, string[] Modes, int Channels)
{
    private static readonly string[] Known = ["plain", "relay", "tls", "tls-mfd", "plain-mfd"];

    public static Options? Parse(string[] args)
    {
        string? guests = null;
        int rounds = 3, memory = 1024, channels = 2;
        string[] modes = ["plain", "relay"];
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--guests": guests = Next(); break;
                case "--rounds": rounds = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--memory": memory = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--modes":
                    modes = Next().Split(',');
                    if (modes.FirstOrDefault(m => !Known.Contains(m)) is { } unknown)
                    {
                        Console.Error.WriteLine($"--modes: '{unknown}' is not one of {string.Join(", ", Known)}");
                        return null;
                    }
                    if (!modes.Contains("plain"))
                    {
                        Console.Error.WriteLine("--modes: 'plain' is the baseline every other mode is compared with: keep it in the list");
                        return null;
                    }
                    break;
                case "--channels": channels = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                default: return null;
            }
        }
        return guests is null ? null : new Options(guests, rounds, memory, modes, channels);
    }
}

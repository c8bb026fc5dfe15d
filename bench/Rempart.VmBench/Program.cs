using System.Diagnostics;
using System.Globalization;
using Rempart.Host.Agent;
using Rempart.Host.Vm;
using Rempart.KeyProtection;
using Rempart.Tpm.Tests.Infrastructure;
using Rempart.VmBench;

// bench/vm-start.sh runs this (bench/README.md, "VM start and guest disk throughput"): issue 6 §6.
var o = Options.Parse(args);
if (o is null)
{
    Console.Error.WriteLine("usage: rempart-vmbench --guests DIR [--rounds 3] [--disk-rounds 1] [--disk-mib 256] [--memory 512] [--cpus 1] [--no-start] [--no-disk]");
    return 2;
}
foreach (var tool in new[] { "qemu-system-x86_64", "qemu-img", "swtpm", "swtpm_setup", "setpriv", "setsid", "prlimit", "chown" })
{
    Tool.Which(tool);
}
var dir = Directory.CreateTempSubdirectory("hvb-").FullName; // short: unix socket paths live under it
File.SetUnixFileMode(dir, VmManager.Traversable);
Console.WriteLine($"# rempart-vmbench {DateTime.UtcNow:yyyy-MM-ddTHH:mm:ssZ}, {Environment.ProcessorCount} CPUs, load {File.ReadAllText("/proc/loadavg").Trim()}");
Rig? rig = null;
try
{
    rig = await Rig.StartAsync(dir);
    var report = new Report();
    var guestImg = Path.Combine(o.Guests, "guest.img");

    // vm create, timed by its progress lines: where its time goes (issue 6 §6, the import path).
    var (kpStart, vmkStart) = await rig.KeyProtectorAsync("vm-bench-start", ShieldingLevel.EncryptionSupported);
    var marker = Rig.Marker(o.Guests, Path.Combine(dir, "marker.img"), null);
    var createMarks = new Clock.Marks();
    long c0 = Stopwatch.GetTimestamp();
    await rig.Vms.CreateAsync(new VmCreateRequest("sbench", kpStart, guestImg, "raw", o.MemoryMiB, o.Cpus, SecureBootTemplate.Snakeoil,
        [("marker", marker, "raw", 0)]), createMarks, CancellationToken.None);
    report.Create(c0, Stopwatch.GetTimestamp(), createMarks);

    await StepCosts.MeasureAsync(rig, Path.Combine(rig.Dir, "data", "vms", "sbench"), kpStart, vmkStart, report);

    var plain = new PlainVm(Path.Combine(dir, "plain"));
    var plainGuest = Path.Combine(dir, "plain", "guest.img");
    var plainMarker = Path.Combine(dir, "plain", "marker.img");
    File.Copy(guestImg, plainGuest);
    if (o.Start)
    {
        // The first start pays the agent's KVM probe (cached afterwards): shown apart, not in the medians.
        report.FirstStart = await ShieldedStartAsync(rig, "sbench");
        for (int r = 0; r < o.Rounds; r++)
        {
            // Alternate the order, so that neither side always runs after the other.
            for (int k = 0; k < 2; k++)
            {
                bool shielded = (r + k) % 2 == 0;
                if (shielded)
                {
                    report.Shielded.Add(await ShieldedStartAsync(rig, "sbench"));
                }
                else
                {
                    Rig.Marker(o.Guests, plainMarker, null);
                    report.Plain.Add(await PlainStartAsync(plain, [(plainGuest, "raw"), (plainMarker, "raw")], o));
                }
                var last = shielded ? report.Shielded[^1] : report.Plain[^1];
                Console.WriteLine($"# start round {r + 1}, {(shielded ? "shielded" : "plain")}: {last.Total:0} ms to init, load {File.ReadAllText("/proc/loadavg").Trim()}");
            }
        }
    }
    if (o.Disk)
    {
        var (kpDisk, _) = await rig.KeyProtectorAsync("vm-bench-disk", ShieldingLevel.EncryptionSupported);
        await rig.FreshTokenAsync();
        var benchMarker = Rig.Marker(o.Guests, Path.Combine(dir, "marker-bench.img"), "disk-bench");
        await rig.Vms.CreateAsync(new VmCreateRequest("dbench", kpDisk, guestImg, "raw", o.MemoryMiB, o.Cpus, SecureBootTemplate.Snakeoil,
            [("marker", benchMarker, "raw", 0), ("bench", null, "qcow2", (long)o.DiskMiB << 20)]), null, CancellationToken.None);
        var raw = Path.Combine(dir, "plain", "bench.raw");
        var qcow2 = Path.Combine(dir, "plain", "bench.qcow2");
        for (int r = 0; r < o.DiskRounds; r++)
        {
            report.Disk.Add(("LUKS qcow2 (agent)", await ShieldedDiskAsync(rig, "dbench")));
            File.Delete(qcow2);
            Tool.Run("qemu-img", ["create", "-q", "-f", "qcow2", qcow2, $"{o.DiskMiB}M"]).Ok();
            Rig.Marker(o.Guests, plainMarker, "disk-bench");
            report.Disk.Add(("qcow2 (plain)", await PlainDiskAsync(plain, [(plainGuest, "raw"), (plainMarker, "raw"), (qcow2, "qcow2")], o)));
            File.Delete(raw);
            Tool.Run("truncate", ["-s", $"{o.DiskMiB}M", raw]).Ok();
            Rig.Marker(o.Guests, plainMarker, "disk-bench");
            report.Disk.Add(("raw (plain)", await PlainDiskAsync(plain, [(plainGuest, "raw"), (plainMarker, "raw"), (raw, "raw")], o)));
            Console.WriteLine($"# disk round {r + 1} done, load {File.ReadAllText("/proc/loadavg").Trim()}");
        }
    }
    report.Print(Console.Out);
    Console.WriteLine($"# end {DateTime.UtcNow:yyyy-MM-ddTHH:mm:ssZ}, load {File.ReadAllText("/proc/loadavg").Trim()}");
    return 0;
}
finally
{
    if (rig is not null)
    {
        await rig.DisposeAsync();
    }
    Directory.Delete(dir, recursive: true);
}

static async Task<StartRun> ShieldedStartAsync(Rig rig, string name)
{
    await rig.FreshTokenAsync();
    var marks = new Clock.Marks();
    long t0 = Stopwatch.GetTimestamp();
    var st = await rig.Vms.StartAsync(name, marks, CancellationToken.None);
    var console = await rig.ConsoleAsync(name);
    var state = VmRunState.Load(Path.Combine(rig.Dir, "data", "vm-state"), name) ?? throw new InvalidOperationException("no run state");
    long swtpm = Clock.ProcessStart(state.SwtpmPid);
    long qemu = Clock.ProcessStart(st.Pid!.Value);
    long qmp = Clock.FileTime(state.QmpSocket);
    long begin = await console.WaitForAsync("begin", TimeSpan.FromMinutes(10));
    await console.WaitForAsync("done", TimeSpan.FromMinutes(10));
    await rig.UntilStoppedAsync(name, TimeSpan.FromMinutes(2));
    long asked = marks.First("asking the Guardian"), released = marks.First("key released"), vtpm = marks.First("vTPM"), resumed = marks.First("QEMU (pid");
    return new StartRun(Clock.Ms(t0, begin),
    [
        ("bundle load, VM user lookup", Clock.Ms(t0, asked)),
        ("release: Guardian + key recovery in the host TPM", Clock.Ms(asked, released)),
        ("key check, run folder, files to the VM user (chown)", Clock.Ms(released, swtpm)),
        ("swtpm start (state decrypted by swtpm)", Clock.Ms(swtpm, vtpm)),
        ("NVRAM decryption, KVM probe, capabilities, qemu --version", Clock.Ms(vtpm, qemu)),
        ("QEMU start to QMP", Clock.Ms(qemu, qmp)),
        ("QMP: LUKS secrets + disks, cont", Clock.Ms(qmp, resumed)),
        .. Boot(console, resumed, begin),
    ]);
}

// From the guest's start (cont, or QMP bound for the plain QEMU) to init: firmware until its boot
// manager loads the UKI, then UKI load + EFI stub + kernel until /init's first line.
static (string, double)[] Boot(GuestConsole console, long from, long begin)
{
    var bds = console.Milestone(GuestConsole.Milestones[0]);
    return bds is { } b
        ? [("firmware to boot manager loading the UKI", Clock.Ms(from, b)), ("UKI load, EFI stub, kernel to init", Clock.Ms(b, begin))]
        : [("firmware + kernel to init (no BdsDxe line seen)", Clock.Ms(from, begin)), ("-", double.NaN)];
}

static async Task<StartRun> PlainStartAsync(PlainVm plain, IReadOnlyList<(string, string)> disks, Options o)
{
    var run = await plain.StartAsync(disks, o.MemoryMiB, o.Cpus);
    long begin = await run.Console.WaitForAsync("begin", TimeSpan.FromMinutes(10));
    await run.Console.WaitForAsync("done", TimeSpan.FromMinutes(10));
    await PlainVm.StopAsync(run, TimeSpan.FromMinutes(1));
    return new StartRun(Clock.Ms(run.Start, begin),
    [
        ("OVMF vars template copied", Clock.Ms(run.Start, run.VarsCopied)),
        ("swtpm start", Clock.Ms(run.VarsCopied, run.SwtpmReady)),
        ("QEMU spawned and started to QMP", Clock.Ms(run.SwtpmReady, run.QmpBound)),
        .. Boot(run.Console, run.QmpBound, begin),
    ]);
}

static async Task<DiskRun> ShieldedDiskAsync(Rig rig, string name)
{
    await rig.FreshTokenAsync();
    await rig.Vms.StartAsync(name, null, CancellationToken.None);
    var console = await rig.ConsoleAsync(name);
    await console.WaitForAsync("done", TimeSpan.FromMinutes(15));
    await rig.UntilStoppedAsync(name, TimeSpan.FromMinutes(2));
    return DiskRun.From(console);
}

static async Task<DiskRun> PlainDiskAsync(PlainVm plain, IReadOnlyList<(string, string)> disks, Options o)
{
    var run = await plain.StartAsync(disks, o.MemoryMiB, o.Cpus);
    await run.Console.WaitForAsync("done", TimeSpan.FromMinutes(15));
    await PlainVm.StopAsync(run, TimeSpan.FromMinutes(1));
    return DiskRun.From(run.Console);
}

internal sealed record Options(string Guests, int Rounds, int DiskRounds, int DiskMiB, int MemoryMiB, int Cpus, bool Start, bool Disk)
{
    public static Options? Parse(string[] args)
    {
        var o = new Options("", 3, 1, 256, 512, 1, true, true);
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            int Int() => int.Parse(Next(), CultureInfo.InvariantCulture);
            o = args[i] switch
            {
                "--guests" => o with { Guests = Path.GetFullPath(Next()) },
                "--rounds" => o with { Rounds = Int() },
                "--disk-rounds" => o with { DiskRounds = Int() },
                "--disk-mib" => o with { DiskMiB = Int() },
                "--memory" => o with { MemoryMiB = Int() },
                "--cpus" => o with { Cpus = Int() },
                "--no-start" => o with { Start = false },
                "--no-disk" => o with { Disk = false },
                _ => null,
            };
            if (o is null)
            {
                return null;
            }
        }
        return File.Exists(Path.Combine(o.Guests, "guest.img")) ? o : null;
    }
}

using System.Diagnostics;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.VmBench;

/// <summary>
/// The same guest launched plain, as scripts/boot-test-guest.sh does: no attestation, no
/// encryption — raw disks on the command line, a plain copy of the OVMF variable template, a plain
/// swtpm (its state manufactured once, off the start path, as a bundle's vTPM is at create) — with
/// the serial console on QEMU's stdout. Same machine, firmware, memory and CPUs as the shielded VM.
/// </summary>
public sealed class PlainVm
{
    public const string FirmwareCode = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
    public const string VarsTemplate = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";

    private readonly string _dir;
    private readonly string _tpmState;

    public PlainVm(string dir)
    {
        _dir = Directory.CreateDirectory(dir).FullName;
        _tpmState = Directory.CreateDirectory(Path.Combine(_dir, "tpm")).FullName;
        Tool.Run("swtpm_setup", ["--tpm2", "--tpmstate", _tpmState, "--pcr-banks", "sha256", "--create-ek-cert", "--overwrite"]).Ok();
    }

    /// <summary>QEMU's QMP socket (plain, no allowlist: this is the baseline).</summary>
    public string QmpSocket => Path.Combine(_dir, "qmp.sock");

    public sealed record Run(long Start, long VarsCopied, long SwtpmReady, long QemuForked, long QmpBound, GuestConsole Console, Process Qemu, Process Swtpm);

    /// <summary>Starts swtpm and QEMU with <paramref name="disks"/> (path, format) as virtio disks in that order (vda, vdb, …).</summary>
    /// <param name="extra">More QEMU arguments (bench/Rempart.MigrationBench: <c>-incoming …</c>).</param>
    public async Task<Run> StartAsync(IReadOnlyList<(string Path, string Format)> disks, int memoryMiB, int cpus, IReadOnlyList<string>? extra = null)
    {
        var vars = Path.Combine(_dir, "vars.fd");
        var ctrl = Path.Combine(_dir, "swtpm.sock");
        var qmp = Path.Combine(_dir, "qmp.sock");
        File.Delete(ctrl);
        File.Delete(qmp);
        long start = Stopwatch.GetTimestamp();
        File.Copy(VarsTemplate, vars, overwrite: true);
        long copied = Stopwatch.GetTimestamp();
        var swtpm = Launch("swtpm", ["socket", "--tpm2", "--tpmstate", $"dir={_tpmState}", "--ctrl", $"type=unixio,path={ctrl}", "--terminate"], stdout: false);
        while (!File.Exists(ctrl))
        {
            if (swtpm.HasExited)
            {
                throw new InvalidOperationException($"swtpm exited with code {swtpm.ExitCode}");
            }
            await Task.Delay(2);
        }
        long ready = Stopwatch.GetTimestamp();
        List<string> args =
        [
            "-accel", "tcg", "-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
            "-m", memoryMiB.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-smp", cpus.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
            "-drive", $"if=pflash,format=raw,unit=0,readonly=on,file={FirmwareCode}",
            "-drive", $"if=pflash,format=raw,unit=1,file={vars}",
            "-chardev", $"socket,id=chrtpm,path={ctrl}", "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0",
            "-qmp", $"unix:{qmp},server=on,wait=off", "-nic", "none", "-no-reboot",
        ];
        foreach (var (path, format) in disks)
        {
            args.AddRange(["-drive", $"file={path},if=virtio,format={format}"]);
        }
        args.AddRange(extra ?? []);
        var qemu = Launch("qemu-system-x86_64", args, stdout: true);
        long forked = Clock.ProcessStart(qemu.Id);
        var console = GuestConsole.Watch(qemu.StandardOutput.BaseStream);
        var sw = Stopwatch.StartNew();
        while (!File.Exists(qmp) && sw.Elapsed < TimeSpan.FromSeconds(60) && !qemu.HasExited)
        {
            await Task.Delay(5);
        }
        long bound = File.Exists(qmp) ? Clock.FileTime(qmp) : 0;
        return new Run(start, copied, ready, forked, bound, console, qemu, swtpm);
    }

    /// <summary>Waits for QEMU to exit (the guest powers off after its report), then for swtpm (--terminate).</summary>
    public static async Task StopAsync(Run r, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await r.Qemu.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            r.Qemu.Kill();
        }
        if (!r.Swtpm.WaitForExit(5000))
        {
            r.Swtpm.Kill();
        }
        r.Qemu.Dispose();
        r.Swtpm.Dispose();
    }

    /// <summary>
    /// In its own session (<c>setsid</c>, which execs: the pid stays the tool's), as the agent starts
    /// QEMU and swtpm: with the scheduler's autogroups (sched_autogroup_enabled=1 on our kernels) a
    /// session is a CPU-share group, and on a shared host the placement alone moved a TCG boot by
    /// 25-60% (bench/README.md).
    /// </summary>
    private static Process Launch(string tool, IEnumerable<string> args, bool stdout)
    {
        var psi = new ProcessStartInfo(Tool.Which("setsid"))
        {
            UseShellExecute = false,
            RedirectStandardOutput = stdout,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        psi.ArgumentList.Add(Tool.Which(tool));
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {tool}");
        _ = p.StandardError.ReadToEndAsync();
        return p;
    }
}

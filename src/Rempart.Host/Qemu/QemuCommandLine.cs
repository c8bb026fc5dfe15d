using System.Globalization;
using System.Text.RegularExpressions;

namespace Rempart.Host.Qemu;

/// <summary>A launch spec QEMU must not be started with; <see cref="Id"/> names the rule.</summary>
public sealed class QemuConfigurationException(string id, string message) : Exception(message)
{
    /// <summary>Stable identifier, e.g. <c>qemu.spec.serial</c>, <c>qemu.version.sev-snp</c>.</summary>
    public string Id { get; } = id;
}

/// <summary>The programs the launcher runs, by absolute path (the agent runs as root: no PATH lookup).</summary>
public sealed record QemuTools(
    string Qemu = "/usr/bin/qemu-system-x86_64",
    string Prlimit = "/usr/bin/prlimit",
    string Setsid = "/usr/bin/setsid",
    string Setpriv = "/usr/bin/setpriv")
{
    public static QemuTools Default { get; } = new();
}

/// <summary>Which RAM protection a VM gets (what <c>vm status</c> reports).</summary>
/// <param name="Kind"><c>software</c>, <c>sev-snp</c> or <c>tdx</c>.</param>
/// <param name="MemoryLocked">Guest memory locked (<c>mlockall</c>): never swapped.</param>
/// <param name="Limits">What the chosen mode does not give, by stable id.</param>
public sealed record RamProtection(string Kind, bool MemoryLocked, IReadOnlyList<string> Limits);

/// <summary>The argv to execute (launcher then QEMU) and what it requires.</summary>
/// <param name="Argv">The whole argv: <c>prlimit … -- setsid -- setpriv … -- qemu-system-x86_64 …</c>.</param>
/// <param name="QemuArgv">QEMU's own argv (from the binary on), as <c>/proc/PID/cmdline</c> will show it.</param>
/// <param name="MinimumQemu">The oldest QEMU that accepts <see cref="QemuArgv"/>.</param>
/// <param name="RamProtection">What the VM's RAM protection will be.</param>
public sealed record QemuInvocation(IReadOnlyList<string> Argv, IReadOnlyList<string> QemuArgv, QemuVersion MinimumQemu, RamProtection RamProtection);

/// <summary>
/// Builds QEMU's argv (a list, never a shell string) for a shielded VM (docs/qemu.md has the
/// reasons line by line). The guest starts paused (<c>-S</c>): disks and their LUKS secrets are
/// added over QMP (<see cref="QemuDiskCommands"/>), then <c>cont</c>. No secret is ever an argument.
/// </summary>
public static partial class QemuCommandLine
{
    public const string Sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
    private const string RamId = "ram0";
    private const string CgsId = "cgs0";

    /// <summary>The oldest QEMU with <c>sev-snp-guest</c> (upstream 9.1, 2024-09).</summary>
    public static QemuVersion SevSnpMinimum { get; } = new(9, 1, 0);

    /// <summary>The oldest QEMU with <c>tdx-guest</c> (upstream 10.1, 2025-08).</summary>
    public static QemuVersion TdxMinimum { get; } = new(10, 1, 0);

    /// <summary>The id of the <c>pcie-root-port</c> a disk is plugged into (q35's pcie.0 takes no hot-plug).</summary>
    public static string RootPortOf(string diskId) => "rp-" + diskId;

    /// <summary>Builds the invocation; throws <see cref="QemuConfigurationException"/> for a spec that breaks a rule, or that <paramref name="installed"/> cannot run.</summary>
    public static QemuInvocation Build(QemuLaunchSpec spec, QemuVersion installed, QemuTools? tools = null)
    {
        tools ??= QemuTools.Default;
        Validate(spec);
        var minimum = spec.Confidential switch
        {
            ConfidentialMode.SevSnp => SevSnpMinimum,
            ConfidentialMode.Tdx => TdxMinimum,
            _ => QemuVersion.Debian12,
        };
        if (installed < minimum)
        {
            var mode = spec.Confidential == ConfidentialMode.SevSnp ? "sev-snp" : "tdx";
            throw new QemuConfigurationException($"qemu.version.{mode}",
                $"{mode} needs QEMU {minimum} or later; this host has {installed}");
        }

        var q = new List<string> { tools.Qemu, "-name", spec.Name, "-nodefaults", "-no-user-config" };
        var limits = new List<string>();
        var accel = spec.Accelerator == Accelerator.Kvm ? "kvm" : "tcg";
        switch (spec.Confidential)
        {
            case ConfidentialMode.None:
                q.AddRange(["-machine", $"q35,smm=on,accel={accel},dump-guest-core=off,memory-backend={RamId}",
                    "-global", "driver=cfi.pflash01,property=secure,value=on",
                    "-drive", $"if=pflash,format=raw,unit=0,readonly=on,file={spec.FirmwareCode}",
                    "-drive", $"if=pflash,format=raw,unit=1,file={spec.NvramPath}"]);
                break;
            case ConfidentialMode.SevSnp:
                // SNP encrypts and measures the firmware as private guest memory: -bios, not a
                // pflash mapping; the variable store is pflash unit 0. No SMM under SNP, so the
                // store is not SMM-protected from the guest OS (the host cannot read it either way).
                q.AddRange(["-machine", $"q35,smm=off,accel=kvm,dump-guest-core=off,memory-backend={RamId},confidential-guest-support={CgsId}",
                    "-bios", spec.FirmwareCode,
                    "-drive", $"if=pflash,format=raw,unit=0,file={spec.NvramPath}"]);
                limits.Add("sev-snp.varstore-not-smm-protected");
                break;
            case ConfidentialMode.Tdx:
                // TDVF is loaded with -bios and keeps UEFI variables in TD memory: nothing persists,
                // so Secure Boot keys must be built into the (measured) firmware image.
                q.AddRange(["-machine", $"q35,smm=off,kernel-irqchip=split,accel=kvm,dump-guest-core=off,memory-backend={RamId},confidential-guest-support={CgsId}",
                    "-bios", spec.FirmwareCode]);
                limits.Add("tdx.nvram-volatile");
                break;
        }
        q.AddRange(["-object", $"memory-backend-memfd,id={RamId},size={spec.MemoryMiB}M,dump=off",
            "-m", spec.MemoryMiB.ToString(CultureInfo.InvariantCulture),
            "-smp", spec.Cpus.ToString(CultureInfo.InvariantCulture)]);
        if (spec.Accelerator == Accelerator.Kvm)
        {
            q.AddRange(["-cpu", "host"]);
        }
        if (spec.LockMemory)
        {
            q.AddRange(["-overcommit", "mem-lock=on"]);
        }
        else
        {
            limits.Add("memory.not-locked");
        }
        switch (spec.Confidential)
        {
            case ConfidentialMode.SevSnp:
                var snp = spec.SevSnp ?? new SevSnpParameters();
                q.AddRange(["-object", string.Create(CultureInfo.InvariantCulture,
                    $"sev-snp-guest,id={CgsId},cbitpos={snp.CbitPosition},reduced-phys-bits={snp.ReducedPhysBits},policy=0x{snp.Policy:x}")]);
                break;
            case ConfidentialMode.Tdx:
                var tdx = spec.Tdx ?? new TdxParameters();
                var obj = $"tdx-guest,id={CgsId},sept-ve-disable={(tdx.SeptVeDisable ? "on" : "off")}";
                if (tdx.MrConfigId is { } mr)
                {
                    obj += ",mrconfigid=" + Convert.ToBase64String(mr);
                }
                q.AddRange(["-object", obj]);
                break;
        }
        q.AddRange(["-chardev", $"socket,id=chrtpm,path={spec.SwtpmSocket}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", "tpm-crb,tpmdev=tpm0"]);
        for (var i = 0; i < spec.Disks.Count; i++)
        {
            q.AddRange(["-device", string.Create(CultureInfo.InvariantCulture,
                $"pcie-root-port,id={RootPortOf(spec.Disks[i].Id)},bus=pcie.0,chassis={i + 1}")]);
        }
        q.AddRange(["-display", "none", "-vga", "none", "-nic", "none"]);
        if (spec.Shielding == ShieldingLevel.EncryptionSupported)
        {
            q.AddRange(["-chardev", $"socket,id=serial0,path={spec.SerialSocket},server=on,wait=off",
                "-serial", "chardev:serial0"]);
        }
        q.AddRange(["-qmp", $"unix:{spec.QmpSocket},server=on,wait=off",
            "-pidfile", spec.PidFile,
            "-sandbox", Sandbox,
            "-msg", "timestamp=on"]);
        if (spec.IncomingSocket is { } incoming)
        {
            q.AddRange(["-incoming", "unix:" + incoming]);
        }
        q.Add("-S");

        // QEMU 7.2 has -runas (no -run-with), but it and -daemonize die under the sandbox this
        // argv requires (setuid and fork are denied: SIGSYS). So privileges are dropped before
        // exec: prlimit (core 0, memlock) → setsid (own session: survives the agent) → setpriv
        // (uid/gid, no groups but the kvm device's, no capabilities) → QEMU. Each wrapper execs; the pid stays QEMU's.
        var argv = new List<string> { tools.Prlimit, "--core=0" };
        if (spec.LockMemory)
        {
            argv.Add("--memlock=unlimited");
        }
        argv.AddRange(["--", tools.Setsid, "--", tools.Setpriv,
            string.Create(CultureInfo.InvariantCulture, $"--reuid={spec.RunAs.Uid}"),
            string.Create(CultureInfo.InvariantCulture, $"--regid={spec.RunAs.Gid}"),
            spec.DeviceGroup is { } device ? string.Create(CultureInfo.InvariantCulture, $"--groups={device}") : "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--"]);
        argv.AddRange(q);
        var kind = spec.Confidential switch
        {
            ConfidentialMode.SevSnp => "sev-snp",
            ConfidentialMode.Tdx => "tdx",
            _ => "software",
        };
        return new QemuInvocation(argv, q, minimum, new RamProtection(kind, spec.LockMemory, limits));
    }

    private static void Validate(QemuLaunchSpec spec)
    {
        if (!NamePattern().IsMatch(spec.Name))
        {
            throw new QemuConfigurationException("qemu.spec.name", "a VM name is 1-63 of a-z, 0-9 and '-', starting with a letter or digit");
        }
        if (spec.MemoryMiB is < 64 or > 4 * 1024 * 1024)
        {
            throw new QemuConfigurationException("qemu.spec.memory", "memory must be 64 MiB to 4 TiB");
        }
        if (spec.Cpus is < 1 or > 288)
        {
            throw new QemuConfigurationException("qemu.spec.cpus", "cpus must be 1 to 288");
        }
        if (spec.RunAs.Uid == 0 || spec.RunAs.Gid == 0)
        {
            throw new QemuConfigurationException("qemu.spec.run-as-root", "QEMU never runs as root (uid or gid 0)");
        }
        if (spec.DeviceGroup is { } group && (group == 0 || spec.Accelerator != Accelerator.Kvm))
        {
            throw new QemuConfigurationException("qemu.spec.device-group", "QEMU keeps a device group only under KVM (for /dev/kvm), and never group 0");
        }
        Path(spec.FirmwareCode, "firmware");
        if (spec.Confidential != ConfidentialMode.Tdx)
        {
            Path(spec.NvramPath, "nvram");
        }
        Path(spec.SwtpmSocket, "swtpm socket");
        Path(spec.QmpSocket, "qmp socket");
        Path(spec.PidFile, "pid file");
        if (spec.IncomingSocket is { } incoming)
        {
            Path(incoming, "incoming migration socket");
        }
        switch (spec.Shielding)
        {
            case ShieldingLevel.Shielded when spec.SerialSocket is not null:
                throw new QemuConfigurationException("qemu.spec.serial", "a shielded VM has no serial console");
            case ShieldingLevel.EncryptionSupported when spec.SerialSocket is null:
                throw new QemuConfigurationException("qemu.spec.serial", "encryption-supported needs a serial socket (the agent's console path)");
            case ShieldingLevel.EncryptionSupported:
                Path(spec.SerialSocket!, "serial socket");
                break;
        }
        if (spec.Confidential != ConfidentialMode.None && spec.Accelerator != Accelerator.Kvm)
        {
            throw new QemuConfigurationException("qemu.spec.confidential.accel", "SEV-SNP and TDX need KVM");
        }
        if (spec.Tdx?.MrConfigId is { Length: not 48 })
        {
            throw new QemuConfigurationException("qemu.spec.tdx.mrconfigid", "MRCONFIGID is 48 bytes");
        }
        var ids = new HashSet<string>(StringComparer.Ordinal);
        foreach (var d in spec.Disks)
        {
            if (!IdPattern().IsMatch(d.Id) || !ids.Add(d.Id))
            {
                throw new QemuConfigurationException("qemu.spec.disk.id", "a disk id is [A-Za-z][A-Za-z0-9_-]{0,31}, unique in the VM");
            }
            if (d.LuksSecretId is not null && !IdPattern().IsMatch(d.LuksSecretId))
            {
                throw new QemuConfigurationException("qemu.spec.disk.secret-id", "a secret id is [A-Za-z][A-Za-z0-9_-]{0,31}");
            }
            if (d.Format is not ("qcow2" or "raw") || (d.LuksSecretId is not null && d.Format != "qcow2"))
            {
                throw new QemuConfigurationException("qemu.spec.disk.format", "a disk is qcow2 (LUKS or not) or raw (unencrypted)");
            }
            Path(d.Path, "disk");
        }
    }

    /// <summary>
    /// Absolute, no control characters and no comma: a comma would start a new QEMU option
    /// (QEMU escapes it by doubling; refusing is simpler to reason about).
    /// </summary>
    private static void Path(string path, string what)
    {
        if (!path.StartsWith('/') || path.Contains(',', StringComparison.Ordinal) || path.Any(char.IsControl) || path.Length > 4000)
        {
            throw new QemuConfigurationException("qemu.spec.path", $"the {what} path must be absolute, without commas or control characters");
        }
    }

    [GeneratedRegex("^[a-z0-9][a-z0-9-]{0,62}$")]
    private static partial Regex NamePattern();

    [GeneratedRegex("^[A-Za-z][A-Za-z0-9_-]{0,31}$")]
    internal static partial Regex IdPattern();
}

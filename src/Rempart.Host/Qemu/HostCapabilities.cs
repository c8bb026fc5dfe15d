using System.Globalization;

namespace Rempart.Host.Qemu;

/// <summary>
/// What this host offers a VM's RAM (G5), read from sysfs, /dev and /proc under a root folder
/// (<c>/</c> in production, a fake tree in tests).
/// </summary>
/// <param name="KvmDevice"><c>/dev/kvm</c> exists (whether it works is <see cref="KvmProbe"/>'s question).</param>
/// <param name="SevSnp">kvm_amd has <c>sev_snp=Y</c> and <c>/dev/sev</c> exists.</param>
/// <param name="Tdx">kvm_intel has <c>tdx=Y</c>.</param>
/// <param name="MemlockHardLimit">The agent's RLIMIT_MEMLOCK hard limit in bytes; null when unlimited.</param>
/// <param name="CanRaiseMemlock">The agent holds CAP_SYS_RESOURCE, so a child's limit can go past the hard limit.</param>
public sealed record HostCapabilities(bool KvmDevice, bool SevSnp, bool Tdx, ulong? MemlockHardLimit, bool CanRaiseMemlock)
{
    private const int CapSysResource = 24;

    /// <summary>
    /// The group QEMU must be in to open <c>/dev/kvm</c>: the <c>kvm</c> group when the device is not
    /// open to everyone (Debian's udev makes it 0660 root:kvm); null when no group is needed or none
    /// exists. QEMU runs as its VM's own user with no other group (<see cref="QemuCommandLine"/>), so
    /// without this a KVM host that the root-run probe found usable would refuse every VM.
    /// </summary>
    public uint? KvmGroup { get; init; }

    /// <summary>
    /// QEMU's <c>mem-lock=on</c> locks all of its memory (guest RAM, and under TCG a translation
    /// buffer of up to 1 GiB), so it is used only when the child can be given an unlimited
    /// RLIMIT_MEMLOCK: the hard limit is unlimited, or the agent may raise it.
    /// </summary>
    public bool CanLockMemory => MemlockHardLimit is null || CanRaiseMemlock;

    /// <summary>Whether the host has the hardware for <paramref name="mode"/>.</summary>
    public bool Supports(ConfidentialMode mode) => mode switch
    {
        ConfidentialMode.None => true,
        ConfidentialMode.SevSnp => SevSnp,
        ConfidentialMode.Tdx => Tdx,
        _ => false,
    };

    /// <param name="root">The file system root (a fake tree in tests).</param>
    /// <param name="raiseProbe">Whether raising a child's RLIMIT_MEMLOCK really works; by default
    /// <c>prlimit --memlock=unlimited -- true</c> is run (in a container CAP_SYS_RESOURCE in
    /// CapEff is not enough: the kernel checks it against the initial user namespace).</param>
    public static HostCapabilities Detect(string root = "/", Func<bool>? raiseProbe = null)
    {
        string P(string relative) => Path.Combine(root, relative);
        var (hard, canRaise) = Memlock(P("proc/self/limits"), P("proc/self/status"));
        canRaise = canRaise && (raiseProbe ?? ProbeRaise)();
        return new HostCapabilities(
            KvmDevice: Exists(P("dev/kvm")),
            SevSnp: Flag(P("sys/module/kvm_amd/parameters/sev_snp")) && Exists(P("dev/sev")),
            Tdx: Flag(P("sys/module/kvm_intel/parameters/tdx")),
            MemlockHardLimit: hard,
            CanRaiseMemlock: canRaise)
        {
            KvmGroup = Exists(P("dev/kvm")) ? KvmDeviceGroup(P("dev/kvm"), P("etc/group")) : null,
        };
    }

    /// <summary>The <c>kvm</c> group's id from <paramref name="groupFile"/>, unless the device is read-write for others.</summary>
    private static uint? KvmDeviceGroup(string device, string groupFile)
    {
        const UnixFileMode Everyone = UnixFileMode.OtherRead | UnixFileMode.OtherWrite;
        if ((File.GetUnixFileMode(device) & Everyone) == Everyone || !File.Exists(groupFile))
        {
            return null;
        }
        foreach (var line in File.ReadLines(groupFile))
        {
            var f = line.Split(':');
            if (f.Length >= 3 && f[0] == "kvm" && uint.TryParse(f[2], NumberStyles.None, CultureInfo.InvariantCulture, out var gid) && gid != 0)
            {
                return gid;
            }
        }
        return null;
    }

    private static bool ProbeRaise()
    {
        try
        {
            var psi = new System.Diagnostics.ProcessStartInfo(QemuTools.Default.Prlimit) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var a in new[] { "--memlock=unlimited", "--", "/bin/true" })
            {
                psi.ArgumentList.Add(a);
            }
            using var p = System.Diagnostics.Process.Start(psi);
            if (p is null || !p.WaitForExit(10_000))
            {
                p?.Kill();
                return false;
            }
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    private static bool Exists(string path) => Path.Exists(path);

    /// <summary>A kernel module boolean parameter: <c>Y</c>/<c>1</c> (and <c>N</c>/<c>0</c>).</summary>
    private static bool Flag(string path)
    {
        try
        {
            return File.ReadAllText(path).Trim() is "Y" or "y" or "1";
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>"Max locked memory  SOFT  HARD  bytes" from /proc/self/limits; CapEff from /proc/self/status.</summary>
    private static (ulong? Hard, bool CanRaise) Memlock(string limits, string status)
    {
        ulong? hard = 0;
        if (File.Exists(limits))
        {
            foreach (var line in File.ReadLines(limits))
            {
                if (!line.StartsWith("Max locked memory", StringComparison.Ordinal))
                {
                    continue;
                }
                var fields = line["Max locked memory".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                hard = fields.Length >= 2 && fields[1] == "unlimited" ? null
                    : fields.Length >= 2 && ulong.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out var h) ? h : 0;
            }
        }
        var canRaise = false;
        if (File.Exists(status))
        {
            foreach (var line in File.ReadLines(status))
            {
                if (line.StartsWith("CapEff:", StringComparison.Ordinal)
                    && ulong.TryParse(line[7..].Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var caps))
                {
                    canRaise = (caps & (1UL << CapSysResource)) != 0;
                }
            }
        }
        return (hard, canRaise);
    }
}

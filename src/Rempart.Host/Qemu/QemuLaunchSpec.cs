namespace Rempart.Host.Qemu;

/// <summary>The G7 shielding levels (DESIGN.md §1).</summary>
public enum ShieldingLevel
{
    /// <summary>No display, serial, monitor, parallel port or debug device; <c>vm console</c> is refused.</summary>
    Shielded,

    /// <summary>A serial console on a unix socket that only the agent opens (every session audited by the agent).</summary>
    EncryptionSupported,
}

/// <summary>How QEMU runs guest code.</summary>
public enum Accelerator
{
    /// <summary>Hardware virtualisation, only when <see cref="KvmProbe"/> showed it works.</summary>
    Kvm,

    /// <summary>Software emulation.</summary>
    Tcg,
}

/// <summary>Memory encryption hardware for the guest (G5).</summary>
public enum ConfidentialMode
{
    /// <summary>Software protections only.</summary>
    None,

    /// <summary>AMD SEV-SNP: QEMU's <c>sev-snp-guest</c> object (QEMU ≥ 9.1).</summary>
    SevSnp,

    /// <summary>Intel TDX: QEMU's <c>tdx-guest</c> object (QEMU ≥ 10.1).</summary>
    Tdx,
}

/// <summary>A QEMU version, as QMP's greeting or <c>--version</c> reports it.</summary>
public readonly record struct QemuVersion(int Major, int Minor, int Micro = 0) : IComparable<QemuVersion>
{
    /// <summary>Debian 12's QEMU, the version these machines run.</summary>
    public static QemuVersion Debian12 { get; } = new(7, 2, 0);

    public int CompareTo(QemuVersion other) =>
        Major != other.Major ? Major.CompareTo(other.Major)
        : Minor != other.Minor ? Minor.CompareTo(other.Minor)
        : Micro.CompareTo(other.Micro);

    public static bool operator <(QemuVersion a, QemuVersion b) => a.CompareTo(b) < 0;
    public static bool operator >(QemuVersion a, QemuVersion b) => a.CompareTo(b) > 0;
    public static bool operator <=(QemuVersion a, QemuVersion b) => a.CompareTo(b) <= 0;
    public static bool operator >=(QemuVersion a, QemuVersion b) => a.CompareTo(b) >= 0;

    /// <summary>Parses the first <c>major.minor[.micro]</c> in text such as <c>QEMU emulator version 7.2.22 (Debian …)</c>.</summary>
    public static QemuVersion Parse(string text)
    {
        var m = System.Text.RegularExpressions.Regex.Match(text, @"(\d+)\.(\d+)(?:\.(\d+))?");
        if (!m.Success)
        {
            throw new FormatException("no QEMU version (major.minor[.micro]) in the text");
        }
        static int N(string s) => int.Parse(s, System.Globalization.CultureInfo.InvariantCulture);
        return new QemuVersion(N(m.Groups[1].Value), N(m.Groups[2].Value), m.Groups[3].Success ? N(m.Groups[3].Value) : 0);
    }

    public override string ToString() => $"{Major}.{Minor}.{Micro}";
}

/// <summary>
/// A virtual disk. It is not on QEMU's command line: the agent adds it over QMP before the guest
/// runs (<see cref="QemuDiskCommands"/>), right after the LUKS secret it needs.
/// </summary>
/// <param name="Id">Device and node name (<c>[A-Za-z][A-Za-z0-9_-]{0,31}</c>).</param>
/// <param name="Path">The image file.</param>
/// <param name="Format"><c>qcow2</c> or <c>raw</c>.</param>
/// <param name="LuksSecretId">The QEMU <c>secret</c> object holding the LUKS key; null for an unencrypted disk.</param>
/// <param name="ReadOnly">Attach read-only.</param>
public sealed record QemuDisk(string Id, string Path, string Format = "qcow2", string? LuksSecretId = null, bool ReadOnly = false);

/// <summary>AMD SEV-SNP launch parameters (QEMU's <c>sev-snp-guest</c> properties).</summary>
/// <param name="CbitPosition">The C-bit position (CPUID 0x8000001F EBX[5:0]; 51 on EPYC 7003/9004).</param>
/// <param name="ReducedPhysBits">Physical address bits lost to encryption (EBX[11:6]).</param>
/// <param name="Policy">The SNP guest policy (64 bits; QEMU's default 0x30000: SMT allowed, bit 17 reserved-one).</param>
public sealed record SevSnpParameters(int CbitPosition = 51, int ReducedPhysBits = 1, ulong Policy = 0x30000);

/// <summary>Intel TDX launch parameters (QEMU's <c>tdx-guest</c> properties).</summary>
/// <param name="SeptVeDisable">Disable EPT-violation #VE in the TD (what Linux guests expect).</param>
/// <param name="MrConfigId">Optional 48-byte MRCONFIGID (base64 in QEMU), a value the tenant can attest.</param>
public sealed record TdxParameters(bool SeptVeDisable = true, byte[]? MrConfigId = null);

/// <summary>A system user QEMU runs as (never root). <see cref="UnixUsers.Lookup"/> resolves one.</summary>
public sealed record UnixUser(string Name, int Uid, int Gid);

/// <summary>Everything <see cref="QemuCommandLine"/> needs to start one VM.</summary>
public sealed record QemuLaunchSpec
{
    /// <summary>The VM's name (<c>[a-z0-9][a-z0-9-]{0,62}</c>); visible in <c>ps</c>.</summary>
    public required string Name { get; init; }

    public required int MemoryMiB { get; init; }

    public int Cpus { get; init; } = 1;

    public required Accelerator Accelerator { get; init; }

    /// <summary>The firmware code (OVMF secure-boot build; read-only).</summary>
    public required string FirmwareCode { get; init; }

    /// <summary>The UEFI variable store, decrypted into memory-backed storage (tmpfs / memfd), never to disk.</summary>
    public required string NvramPath { get; init; }

    /// <summary>swtpm's control socket (QEMU's <c>tpm-emulator</c> chardev).</summary>
    public required string SwtpmSocket { get; init; }

    public IReadOnlyList<QemuDisk> Disks { get; init; } = [];

    public required ShieldingLevel Shielding { get; init; }

    /// <summary>The serial console's unix socket (QEMU is the server); required for encryption-supported, refused for shielded.</summary>
    public string? SerialSocket { get; init; }

    /// <summary>QMP's unix socket, in a folder only the agent and this VM's user can open.</summary>
    public required string QmpSocket { get; init; }

    /// <summary>QEMU writes its pid here (<see cref="QemuProcess.ReattachAsync"/> reads it).</summary>
    public required string PidFile { get; init; }

    public ConfidentialMode Confidential { get; init; } = ConfidentialMode.None;

    public SevSnpParameters? SevSnp { get; init; }

    public TdxParameters? Tdx { get; init; }

    public required UnixUser RunAs { get; init; }

    /// <summary>
    /// The one supplementary group QEMU keeps (<see cref="HostCapabilities.KvmGroup"/>, under KVM
    /// only): it opens <c>/dev/kvm</c> and nothing else of the host. Null: no group at all.
    /// </summary>
    public uint? DeviceGroup { get; init; }

    /// <summary>Lock guest memory (<c>-overcommit mem-lock=on</c>); only when <see cref="HostCapabilities.CanLockMemory"/>.</summary>
    public bool LockMemory { get; init; }

    /// <summary>
    /// Restore: QEMU listens on this unix socket for a migration stream (<c>-incoming unix:PATH</c>)
    /// and builds the guest from it instead of booting; the agent connects and feeds the verified
    /// snapshot. On the command line rather than <c>-incoming defer</c> + QMP <c>migrate-incoming</c>,
    /// so the allowlist needs no incoming-migration command at all. Null: a normal boot.
    /// </summary>
    public string? IncomingSocket { get; init; }
}

using System.Text.Json;
using System.Text.Json.Serialization;
using Rempart.Host.Vm;

namespace Rempart.Host.Agent;

/// <summary>
/// Where the agent keeps its VMs, and what it runs them with: VmsDir holds the bundles (DATA/vms),
/// StateDir the agent's record of each running VM (DATA/vm-state, 0700), RunDir the per-VM run
/// folders (sockets, pid file) owned by the VM's own uid, ShmDir the memory-backed storage for the clear
/// UEFI variable store while a VM runs.
/// </summary>
public sealed record VmHostOptions(
    string VmsDir,
    string StateDir,
    string RunDir,
    string ShmDir = "/dev/shm",
    string Qemu = "/usr/bin/qemu-system-x86_64",
    string FirmwareCode = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
    string VmUser = Qemu.UnixUsers.VmUser)
{
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>The first of the uids given to running VMs, one each (<see cref="VmUids"/>).</summary>
    public int VmUidFirst { get; init; } = VmUids.DefaultFirst;

    /// <summary>How many uids from <see cref="VmUidFirst"/> on.</summary>
    public int VmUidCount { get; init; } = VmUids.DefaultCount;

    /// <summary>Where this agent accepts live migrations (none when null).</summary>
    public System.Net.IPEndPoint? MigrationListen { get; init; }

    /// <summary>The agent's defaults under its data folder.</summary>
    public static VmHostOptions Under(string dataDir, string runDir = "/run/rempart-vms") =>
        new(Path.Combine(dataDir, "vms"), Path.Combine(dataDir, "vm-state"), runDir);
}

/// <summary>
/// What the agent records about a running VM (DATA/vm-state/NAME.json, root 0600, outside the
/// bundle and out of the VM user's reach), so that a restarted agent finds it again: QEMU's pid
/// file and QMP socket (checked against /proc before use), swtpm's pid, where the clear variable
/// store lives, and what the start got. No key material.
/// </summary>
public sealed record VmRunState(
    string Name,
    string VmId,
    int QemuPid,
    int SwtpmPid,
    string RunDir,
    string QmpSocket,
    string PidFile,
    string SwtpmSocket,
    string? SerialSocket,
    string NvramCopy,
    string ReleaseId,
    long GuardianAuditSeq,
    DateTimeOffset StartedAt,
    string Accelerator,
    string AcceleratorReason,
    string RamProtection,
    bool MemoryLocked,
    IReadOnlyList<string> RamLimits,
    int VmUid = 0)
{
    /// <summary>The user QEMU and swtpm run as: the VM's own uid (<see cref="VmUids"/>), or for a VM started by an agent before per-VM uids, the shared <paramref name="legacyUser"/>.</summary>
    public Qemu.UnixUser RunUser(string legacyUser) =>
        VmUid != 0 ? new Qemu.UnixUser($"vm-uid-{VmUid}", VmUid, VmUid) : Qemu.UnixUsers.Lookup(legacyUser);

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.Never };

    public static string PathFor(string stateDir, string name) => Path.Combine(stateDir, name + ".json");

    public void Save(string stateDir)
    {
        SecureFiles.CreateDirectory(stateDir);
        SecureFiles.WriteAtomic(PathFor(stateDir, Name), JsonSerializer.SerializeToUtf8Bytes(this, Json));
    }

    public static VmRunState? Load(string stateDir, string name)
    {
        var p = PathFor(stateDir, name);
        if (!File.Exists(p))
        {
            return null;
        }
        try
        {
            return JsonSerializer.Deserialize<VmRunState>(File.ReadAllBytes(p), Json);
        }
        catch (JsonException e)
        {
            throw new VmBundleException("vm.state", $"{p} does not parse: {e.Message}", e);
        }
    }

    public static void Delete(string stateDir, string name) => File.Delete(PathFor(stateDir, name));
}

/// <summary>What <c>vm status</c> and <c>vm list</c> show.</summary>
public sealed record VmStatus(
    string Name,
    string VmId,
    string State,
    string Shielding,
    int MemoryMiB,
    int Cpus,
    IReadOnlyList<string> Disks,
    int? Pid,
    string? Accelerator,
    string? RamProtection,
    bool? MemoryLocked,
    IReadOnlyList<string>? RamLimits,
    string? ReleaseId,
    DateTimeOffset? StartedAt,
    string? Note);

using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Rempart.Host.Qemu;

namespace Rempart.Host.Agent;

/// <summary>
/// One Unix uid — and the gid of the same number — for each running VM, so that a compromised
/// QEMU or swtpm cannot open another VM's disks, vTPM state, clear UEFI variables or sockets:
/// each is owned by its own VM's uid for the run, with owner-only modes (docs/host-agent.md,
/// "One uid per VM"). The ids have no passwd or group entry (nothing to create or to clean up;
/// setpriv and chown take numbers) and come from a range that systemd documents as unused
/// (1879048192…2147483647, systemd.io/UIDS-GIDS): by default 0x70020000…0x7002FFFF. A uid is
/// never given while it is in the user or group database, held by another VM, or owned by any
/// running process (a leftover of a VM whose agent died).
/// </summary>
public sealed class VmUids(int first = VmUids.DefaultFirst, int count = VmUids.DefaultCount, string passwd = "/etc/passwd", string group = "/etc/group", string proc = "/proc")
{
    public const int DefaultFirst = 0x70020000;
    public const int DefaultCount = 0x10000;

    private readonly Dictionary<int, string> _held = [];
    private readonly object _lock = new();

    /// <summary>The uid a VM would like (a hash of its name into the range): stable across starts, so audit and `ps` read the same.</summary>
    public int Preferred(string vm) =>
        first + (int)(BitConverter.ToUInt32(SHA256.HashData(Encoding.UTF8.GetBytes(vm)), 0) % (uint)count);

    /// <summary>Records the uid of a VM found running after an agent restart.</summary>
    public void Hold(string vm, int uid)
    {
        lock (_lock)
        {
            _held[uid] = vm;
        }
    }

    /// <summary>A free uid for <paramref name="vm"/>, held until <see cref="Release"/>.</summary>
    public UnixUser Allocate(string vm)
    {
        var taken = Database(passwd).Concat(Database(group)).Concat(ProcessOwners()).ToHashSet();
        lock (_lock)
        {
            int start = Preferred(vm) - first;
            for (int i = 0; i < count; i++)
            {
                int uid = first + (start + i) % count;
                if (!_held.ContainsKey(uid) && !taken.Contains(uid))
                {
                    _held[uid] = vm;
                    return new UnixUser($"vm-uid-{uid.ToString(CultureInfo.InvariantCulture)}", uid, uid);
                }
            }
        }
        throw new VmOperationException("vm.uid.exhausted", $"no free uid in {first}…{first + count - 1} for {vm}: every one is held by a VM, a process or a user entry");
    }

    /// <summary>Gives a VM's uid back (its run is over and its files are root's again).</summary>
    public void Release(string vm, int uid)
    {
        lock (_lock)
        {
            if (_held.TryGetValue(uid, out var holder) && holder == vm)
            {
                _held.Remove(uid);
            }
        }
    }

    /// <summary>The numeric ids (third field) of an /etc/passwd- or /etc/group-format file.</summary>
    private static IEnumerable<int> Database(string path)
    {
        if (!File.Exists(path))
        {
            yield break;
        }
        foreach (var line in File.ReadLines(path))
        {
            var f = line.Split(':');
            if (f.Length >= 3 && int.TryParse(f[2], NumberStyles.None, CultureInfo.InvariantCulture, out var id))
            {
                yield return id;
            }
        }
    }

    /// <summary>The real, effective, saved and filesystem uids and gids of every process (<c>/proc/PID/status</c>).</summary>
    private List<int> ProcessOwners()
    {
        var ids = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories(proc))
        {
            if (!Path.GetFileName(dir).All(char.IsAsciiDigit))
            {
                continue;
            }
            try
            {
                foreach (var line in File.ReadLines(Path.Combine(dir, "status")))
                {
                    if (line.StartsWith("Uid:", StringComparison.Ordinal) || line.StartsWith("Gid:", StringComparison.Ordinal))
                    {
                        foreach (var v in line[4..].Split('\t', ' ', StringSplitOptions.RemoveEmptyEntries))
                        {
                            if (long.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var id) && id <= int.MaxValue)
                            {
                                ids.Add((int)id);
                            }
                        }
                    }
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // the process ended meanwhile
            }
        }
        return ids;
    }
}

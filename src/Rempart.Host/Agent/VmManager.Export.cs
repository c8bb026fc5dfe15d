using System.Formats.Tar;
using System.Security.Cryptography;
using Rempart.Host.Vm;

namespace Rempart.Host.Agent;

/// <summary>What <c>vm export</c> and <c>vm import</c> report.</summary>
public sealed record VmArchiveInfo(string Name, string VmId, string Path, int Files, long Bytes, string Sha256, IReadOnlyList<string> Snapshots);

/// <summary>
/// A stopped VM's bundle as one tar file, to move it (its snapshots included) to another host
/// (issue 7 §1, docs/vm-bundle.md "Export and import"). Every file in it is what the bundle holds —
/// LUKS disks, encrypted variables, swtpm-encrypted vTPM state, sealed snapshots — so the archive
/// reveals nothing without a release; the importing host needs its own release (healthy, allowed
/// group) to start or restore it. Import checks every entry (regular files under the bundle's known
/// names only) and the bundle's shape before the VM appears.
/// </summary>
public sealed partial class VmManager
{
    private const int MaxArchiveEntries = 4096;

    /// <summary><c>vm export NAME --out FILE</c>: the VM must be stopped; FILE must not exist (written 0600).</summary>
    public async Task<VmArchiveInfo> ExportAsync(string name, string path, CancellationToken ct)
    {
        CheckName(name);
        if (!Path.IsPathRooted(path))
        {
            throw new VmOperationException("vm.request", $"'{path}' is not an absolute path on this host");
        }
        var gate = _locks.GetOrAdd(name, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(ct);
        try
        {
            var bundle = Load(name);
            if (_running.ContainsKey(name) || VmRunState.Load(_o.StateDir, name) is not null)
            {
                throw new VmOperationException("vm.running", $"{name} is running: export a stopped VM (a running one moves with vm migrate)");
            }
            var files = BundleFiles(bundle.Directory);
            if (File.Exists(path))
            {
                throw new VmOperationException("vm.export.exists", $"{path} exists: an export never overwrites a file");
            }
            long bytes = 0;
            bool created = false;
            try
            {
                await using var file = new FileStream(path, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = SecureFiles.FileMode });
                created = true;
                await using var tar = new TarWriter(file, TarEntryFormat.Pax, leaveOpen: false);
                foreach (var (rel, _) in files)
                {
                    await using var data = File.OpenRead(Path.Combine(bundle.Directory, rel));
                    var entry = new PaxTarEntry(TarEntryType.RegularFile, rel)
                    {
                        DataStream = data, Mode = SecureFiles.FileMode, Uid = 0, Gid = 0, ModificationTime = DateTimeOffset.UnixEpoch,
                    };
                    await tar.WriteEntryAsync(entry, ct);
                    bytes += data.Length;
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or OperationCanceledException)
            {
                if (created)
                {
                    File.Delete(path); // a partial archive is not an export
                }
                throw new VmOperationException("vm.export.write", $"cannot write {path}: {e.Message}", e);
            }
            var info = new VmArchiveInfo(name, bundle.Config.VmId, path, files.Count, bytes, await Sha256Async(path, ct), SnapshotIds(bundle));
            _audit.Append("vm.exported", name, new Dictionary<string, object?> { ["path"] = path, ["files"] = info.Files, ["sha256"] = info.Sha256 });
            return info;
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary><c>vm import FILE</c>: the archive's entries checked and unpacked aside, the bundle's shape checked, then it appears under its own name (which must be free).</summary>
    public async Task<VmArchiveInfo> ImportAsync(string path, CancellationToken ct)
    {
        if (!Path.IsPathRooted(path) || !File.Exists(path))
        {
            throw new VmOperationException("vm.import.missing", $"no archive at {path} (an absolute path on this host)");
        }
        var partial = Path.Combine(_o.VmsDir, ".import-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6)));
        SecureFiles.CreateDirectory(partial);
        try
        {
            int count = 0;
            long bytes = 0;
            await using (var file = File.OpenRead(path))
            await using (var tar = new TarReader(file))
            {
                while (true)
                {
                    TarEntry? entry;
                    try
                    {
                        entry = await tar.GetNextEntryAsync(copyData: false, ct);
                    }
                    catch (Exception e) when (e is InvalidDataException or FormatException or EndOfStreamException)
                    {
                        throw new VmOperationException("vm.import.format", $"{path} is not a readable tar archive: {e.Message}", e);
                    }
                    if (entry is null)
                    {
                        break;
                    }
                    if (entry.EntryType is TarEntryType.Directory)
                    {
                        continue;
                    }
                    var name = entry.Name.TrimStart('.', '/') == entry.Name ? entry.Name : "";
                    if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile) || !IsBundleFile(name, entry.Length) || ++count > MaxArchiveEntries)
                    {
                        throw new VmOperationException("vm.import.entry", $"{path}: entry '{Migration.SecureChannel.Printable(entry.Name, 120)}' ({entry.EntryType}) is not a bundle file (regular files under vm.json, vm.kp, nvram.enc, disks/, vtpm/, snapshots/ only, at most {MaxArchiveEntries})");
                    }
                    var target = Path.Combine(partial, name);
                    foreach (var d in Ancestors(partial, Path.GetDirectoryName(target)!))
                    {
                        SecureFiles.CreateDirectory(d);
                    }
                    await using var output = new FileStream(target, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = SecureFiles.FileMode });
                    if (entry.DataStream is { } data)
                    {
                        await data.CopyToAsync(output, ct);
                    }
                    bytes += entry.Length;
                }
            }
            foreach (var sub in new[] { VmBundle.DisksDir, VmBundle.VtpmDir, VmBundle.SnapshotsDir })
            {
                if (!Directory.Exists(Path.Combine(partial, sub)))
                {
                    SecureFiles.CreateDirectory(Path.Combine(partial, sub));
                }
            }
            VmBundle bundle;
            try
            {
                bundle = VmBundle.Load(partial);
            }
            catch (VmBundleException e)
            {
                throw new VmOperationException("vm.import." + e.Id, $"{path} does not hold a VM bundle: {e.Message}", e);
            }
            var vm = CheckName(bundle.Config.Name);
            var gate = _locks.GetOrAdd(vm, _ => new SemaphoreSlim(1, 1));
            await gate.WaitAsync(ct);
            try
            {
                if (Directory.Exists(BundleDir(vm)))
                {
                    throw new VmOperationException("vm.exists", $"a VM named {vm} already exists on this host");
                }
                Directory.Move(partial, BundleDir(vm));
                SealState(vm, VmBundle.Load(BundleDir(vm)), "vm import");
            }
            finally
            {
                gate.Release();
            }
            var info = new VmArchiveInfo(vm, bundle.Config.VmId, path, count, bytes, await Sha256Async(path, ct), SnapshotIds(VmBundle.Load(BundleDir(vm))));
            _audit.Append("vm.imported", vm, new Dictionary<string, object?> { ["path"] = path, ["files"] = count, ["sha256"] = info.Sha256, ["vmId"] = info.VmId });
            return info;
        }
        finally
        {
            TryDelete(partial);
        }
    }

    /// <summary><c>vm delete NAME</c>: a stopped VM's bundle, snapshots included, removed from this host (after an export, or for good).</summary>
    public async Task DeleteAsync(string name, CancellationToken ct)
    {
        CheckName(name);
        var gate = _locks.GetOrAdd(name, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(ct);
        try
        {
            var bundle = Load(name);
            if (_running.ContainsKey(name) || VmRunState.Load(_o.StateDir, name) is not null)
            {
                throw new VmOperationException("vm.running", $"{name} is running: stop it first");
            }
            Directory.Delete(bundle.Directory, recursive: true);
            StateSeal.Delete(_o.StateDir, name);
            _audit.Append("vm.deleted", name, new Dictionary<string, object?> { ["vmId"] = bundle.Config.VmId });
        }
        finally
        {
            gate.Release();
        }
    }

    private static IReadOnlyList<string> SnapshotIds(VmBundle bundle) =>
        [.. Directory.EnumerateDirectories(Path.Combine(bundle.Directory, VmBundle.SnapshotsDir)).Select(Path.GetFileName).Where(n => n is not null && !n.StartsWith('.')).Order(StringComparer.Ordinal)!];

    private static async Task<string> Sha256Async(string path, CancellationToken ct)
    {
        await using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(f, ct));
    }
}

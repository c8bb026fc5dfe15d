using System.Diagnostics;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Rempart.Host.Qemu;
using Rempart.Host.Snapshots;
using Rempart.Host.Vm;
using Rempart.KeyProtection;

namespace Rempart.Host.Agent;

/// <summary>
/// One snapshot of a VM (<c>snapshots/&lt;id&gt;/snapshot.json</c>): what was captured and the sealed
/// stream's header fingerprint, compared with the verified header before a restore.
/// </summary>
public sealed record VmSnapshotInfo(
    string Id,
    string Vm,
    string VmId,
    DateTimeOffset Created,
    bool WasRunning,
    IReadOnlyList<string> Disks,
    string Fingerprint,
    long StateBytes,
    long SealedBytes,
    string ReleaseId);

/// <summary>
/// Snapshots of running shielded VMs (issue 7 §1, docs/snapshot-format.md "For the vm snapshot and
/// vm restore commands"). A snapshot pauses the guest, takes QEMU's migration stream (RAM, device
/// state, the vTPM's state blobs, the pflash variable store) through a unix socket only the agent
/// listens on and seals it as it arrives (<see cref="SnapshotStream.SealAsync"/>); while the guest
/// is still paused it copies the LUKS disks and the swtpm-encrypted vTPM state as they are, and
/// re-encrypts the current UEFI variables; then the guest resumes. Restore is a start (fresh release,
/// healthy host) whose QEMU listens for a migration stream: the sealed file is verified whole before
/// anything is started or changed, the disks, vTPM state and variables go back to the snapshot's, and
/// the stream is fed with <see cref="SnapshotStream.RestoreAsync"/>.
/// </summary>
public sealed partial class VmManager
{
    public const string SnapshotFile = "snapshot.json";
    public const string SealedStateFile = "state.sealed";
    public const string SnapshotNvramFile = "nvram.enc";

    private static readonly JsonSerializerOptions SnapshotJson = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    /// <summary><c>vm snapshot NAME [--name S]</c>: the VM must be running (or paused); it is paused for the capture and resumed if it was running.</summary>
    public async Task<VmSnapshotInfo> SnapshotAsync(string name, string? snapshotName, IProgress<string>? progress, CancellationToken ct)
    {
        CheckName(name);
        var id = CheckSnapshotName(snapshotName ?? "s-" + DateTimeOffset.UtcNow.ToString("yyyyMMdd-HHmmss", System.Globalization.CultureInfo.InvariantCulture));
        var gate = _locks.GetOrAdd(name, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(ct);
        try
        {
            if (!_running.TryGetValue(name, out var vm) || !vm.Qemu.IsRunning)
            {
                throw new VmOperationException("vm.not-running", $"{name} is not running: a snapshot captures a running VM's memory");
            }
            var bundle = Load(name);
            var final = SnapshotPath(bundle, id);
            if (Directory.Exists(final))
            {
                throw new VmOperationException("vm.snapshot.exists", $"{name} already has a snapshot named {id} (snapshot ids are never reused)");
            }
            var user = vm.State.RunUser(_o.VmUser);
            var clock = Stopwatch.StartNew();
            progress?.Report("asking the Guardian for the VM's key with a fresh health token");
            var (vmk, release) = await ReleaseAsync(File.ReadAllText(Path.Combine(bundle.Directory, VmBundle.KeyProtectorFile)), ct);
            var partial = Path.Combine(bundle.Directory, VmBundle.SnapshotsDir, "." + id + ".partial");
            var socketPath = Path.Combine(vm.State.RunDir, $"snapshot-{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(6))}.sock");
            var uri = "unix:" + socketPath;
            bool paused = false, wasRunning = false, migrating = false;
            SnapshotKey? key = null;
            try
            {
                using (vmk)
                {
                    bundle.CheckKey(vmk);
                    TryDelete(partial);
                    SecureFiles.CreateDirectory(partial);
                    wasRunning = (await vm.Qemu.Qmp.ExecuteAsync("query-status", null, null, ct))?["status"]?.GetValue<string>() == "running";
                    await vm.Qemu.Qmp.ExecuteAsync("stop", null, null, ct);
                    paused = true;
                    progress?.Report($"guest paused ({(wasRunning ? "it was running" : "it was already paused")})");
                    // The variable store as the firmware left it, re-encrypted under the VM's NVRAM key (the pflash is also in the stream).
                    new NvramStore(Path.Combine(partial, SnapshotNvramFile), bundle.Config.VmId).CreateFromTemplate(vmk, vm.State.NvramCopy);
                    key = SnapshotKey.Derive(vmk, bundle.Config.VmId, id);
                }

                // QEMU (the VM user) connects to a socket the agent listens on in the VM's run folder; migrate is allowed to that one URI for this capture only.
                using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                File.Delete(socketPath);
                listener.Bind(new UnixDomainSocketEndPoint(socketPath));
                listener.Listen(1);
                Chown(user, socketPath);
                vm.Qemu.Qmp.Allowlist.AllowMigrationTo(uri);
                await vm.Qemu.Qmp.ExecuteAsync("migrate", new JsonObject { ["uri"] = uri }, null, ct);
                migrating = true;
                using var acceptTimeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                acceptTimeout.CancelAfter(TimeSpan.FromSeconds(60));
                using var conn = await listener.AcceptAsync(acceptTimeout.Token);
                vm.Qemu.Qmp.Allowlist.RevokeMigrationTo(uri);
                RequirePeer(conn, vm.Qemu.Pid);
                progress?.Report("QEMU's migration stream (RAM, devices, vTPM state blobs, UEFI pflash) is being sealed (AES-256-GCM records)");
                var sealedPath = Path.Combine(partial, SealedStateFile);
                SnapshotStreamInfo info;
                await using (var file = new FileStream(sealedPath, new FileStreamOptions
                {
                    Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = SecureFiles.FileMode, Options = FileOptions.Asynchronous,
                }))
                {
                    await using var ns = new NetworkStream(conn, ownsSocket: false);
                    info = await SnapshotStream.SealAsync(ns, file, key, cancellationToken: ct);
                    file.Flush(flushToDisk: true);
                }
                var status = await WaitForMigrationAsync(vm.Qemu, TimeSpan.FromMinutes(5), ct);
                if (status != "completed")
                {
                    throw new VmOperationException("vm.snapshot.migration", $"QEMU's migration stream ended with status '{status}'");
                }
                migrating = false;
                progress?.Report($"state sealed: {info.PlaintextLength} bytes in {info.Chunks} records, {info.SealedLength} bytes on disk");

                // Still paused, and QEMU has flushed and released its images at the end of the migration: the files are consistent.
                SecureFiles.CreateDirectory(Path.Combine(partial, VmBundle.DisksDir));
                foreach (var d in bundle.Config.Disks)
                {
                    CopyPrivate(Path.Combine(bundle.Directory, d.File), Path.Combine(partial, d.File));
                }
                SecureFiles.CreateDirectory(Path.Combine(partial, VmBundle.VtpmDir));
                foreach (var f in Directory.EnumerateFiles(bundle.VtpmStateDir))
                {
                    CopyPrivate(f, Path.Combine(partial, VmBundle.VtpmDir, Path.GetFileName(f)));
                }
                progress?.Report($"{bundle.Config.Disks.Count} disk(s) copied as they are (LUKS), vTPM state copied (swtpm-encrypted), UEFI variables re-encrypted");
                if (wasRunning)
                {
                    await vm.Qemu.Qmp.ExecuteAsync("cont", null, null, ct);
                }
                paused = false;
                var meta = new VmSnapshotInfo(id, name, bundle.Config.VmId, DateTimeOffset.UtcNow, wasRunning, [.. bundle.Config.Disks.Select(d => d.Id)],
                    info.Header.Fingerprint, info.PlaintextLength, info.SealedLength, release.ReleaseId);
                SecureFiles.WriteAtomic(Path.Combine(partial, SnapshotFile), JsonSerializer.SerializeToUtf8Bytes(meta, SnapshotJson));
                Directory.Move(partial, final);
                progress?.Report($"snapshot {id} taken; the guest was paused for {clock.ElapsedMilliseconds} ms" + (wasRunning ? " and runs again" : " and stays paused"));
                _audit.Append("vm.snapshot.taken", name, new Dictionary<string, object?>
                {
                    ["snapshot"] = id, ["releaseId"] = release.ReleaseId, ["fingerprint"] = meta.Fingerprint, ["stateBytes"] = meta.StateBytes,
                });
                return meta;
            }
            catch (Exception e)
            {
                vm.Qemu.Qmp.Allowlist.RevokeMigrationTo(uri);
                if (migrating)
                {
                    await TryQmpAsync(vm, "migrate_cancel");
                }
                if (paused && wasRunning)
                {
                    await TryQmpAsync(vm, "cont");
                }
                TryDelete(partial);
                _audit.Append("vm.snapshot.failed", name, new Dictionary<string, object?> { ["snapshot"] = id, ["reason"] = e is VmOperationException v ? v.Id : e.GetType().Name });
                throw e switch
                {
                    VmOperationException => e,
                    VmBundleException b => new VmOperationException(b.Id, b.Message, b),
                    SnapshotException s => new VmOperationException(s.Id, s.Message, s),
                    QmpRefusedException q => new VmOperationException(q.RefusalId, q.Message, q),
                    _ => new VmOperationException("vm.snapshot.failed", e.Message, e),
                };
            }
            finally
            {
                key?.Dispose();
                File.Delete(socketPath);
            }
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary><c>vm snapshot list NAME</c>, oldest first.</summary>
    public IReadOnlyList<VmSnapshotInfo> Snapshots(string name)
    {
        var bundle = Load(name);
        var dir = Path.Combine(bundle.Directory, VmBundle.SnapshotsDir);
        return [.. Directory.EnumerateDirectories(dir).Select(Path.GetFileName).Where(n => n is not null && SnapshotNamePattern().IsMatch(n))
            .Select(n => ReadSnapshot(bundle, n!)).OrderBy(s => s.Created).ThenBy(s => s.Id, StringComparer.Ordinal)];
    }

    /// <summary><c>vm snapshot delete NAME S</c>.</summary>
    public async Task DeleteSnapshotAsync(string name, string id, CancellationToken ct)
    {
        CheckName(name);
        CheckSnapshotName(id);
        var gate = _locks.GetOrAdd(name, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(ct);
        try
        {
            var bundle = Load(name);
            var info = ReadSnapshot(bundle, id);
            Directory.Delete(SnapshotPath(bundle, id), recursive: true);
            _audit.Append("vm.snapshot.deleted", name, new Dictionary<string, object?> { ["snapshot"] = id, ["fingerprint"] = info.Fingerprint });
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>
    /// <c>vm restore NAME S</c>: the VM must be stopped. A start whose release also opens the snapshot:
    /// the sealed state is verified whole (a tampered, truncated or foreign file is refused and nothing
    /// is started or changed), then the disks, vTPM state and UEFI variables become the snapshot's, QEMU
    /// starts listening for the stream, and gets it once the disks are in; the guest resumes where it was.
    /// </summary>
    public async Task<VmStatus> RestoreAsync(string name, string id, IProgress<string>? progress, CancellationToken ct)
    {
        CheckName(name);
        CheckSnapshotName(id);
        var bundle = Load(name);
        var info = ReadSnapshot(bundle, id);
        if (!info.Disks.Order(StringComparer.Ordinal).SequenceEqual(bundle.Config.Disks.Select(d => d.Id).Order(StringComparer.Ordinal)))
        {
            throw new VmOperationException("vm.snapshot.disks", $"snapshot {id} has disks [{string.Join(", ", info.Disks)}], the VM now has [{string.Join(", ", bundle.Config.Disks.Select(d => d.Id))}]");
        }
        var incoming = new IncomingRestore(SnapshotPath(bundle, id), info);
        try
        {
            var status = await StartAsync(name, progress, incoming, ct);
            _audit.Append("vm.restored", name, new Dictionary<string, object?>
            {
                ["snapshot"] = id, ["fingerprint"] = info.Fingerprint, ["releaseId"] = status.ReleaseId, ["pid"] = status.Pid,
            });
            return status;
        }
        catch (VmOperationException e) when (e.Id.StartsWith("snapshot.", StringComparison.Ordinal))
        {
            _audit.Append("vm.restore.refused", name, new Dictionary<string, object?> { ["snapshot"] = id, ["reason"] = e.Id, ["started"] = incoming.Started });
            throw;
        }
        finally
        {
            incoming.Dispose();
        }
    }

    /// <summary>What a start does differently when it is a restore (<see cref="IIncoming"/>).</summary>
    private sealed class IncomingRestore(string folder, VmSnapshotInfo info) : IIncoming, IDisposable
    {
        public bool Resume => true;

        private SnapshotKey? _key;
        private FileStream? _file;

        /// <summary>QEMU has been given at least one byte of the stream.</summary>
        public bool Started { get; private set; }

        /// <summary>Right after the release, before anything starts: verify the whole sealed file, then put the snapshot's disks, vTPM state and variables in place.</summary>
        public async Task PrepareAsync(VmBundle bundle, VmMasterKey vmk, IProgress<string>? progress, CancellationToken ct)
        {
            _key = SnapshotKey.Derive(vmk, bundle.Config.VmId, info.Id);
            _file = new FileStream(Path.Combine(folder, SealedStateFile), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous);
            SnapshotStreamInfo verified;
            try
            {
                verified = await SnapshotStream.VerifyAsync(_file, _key, ct);
            }
            catch (SnapshotException e)
            {
                throw new VmOperationException(e.Id, $"snapshot {info.Id} refused before anything started: {e.Message}", e);
            }
            if (verified.Header.Fingerprint != info.Fingerprint)
            {
                throw new VmOperationException("snapshot.metadata", $"snapshot {info.Id}: the sealed state is authentic but not the one {SnapshotFile} recorded (another stream of the same id)");
            }
            progress?.Report($"snapshot {info.Id} verified whole ({verified.Chunks} records, {verified.PlaintextLength} bytes of state) before anything started");
            foreach (var d in bundle.Config.Disks)
            {
                var target = Path.Combine(bundle.Directory, d.File);
                var tmp = Path.Combine(Path.GetDirectoryName(target)!, "." + Path.GetFileName(target) + ".restore");
                CopyPrivate(Path.Combine(folder, d.File), tmp);
                File.Move(tmp, target, overwrite: true);
            }
            foreach (var f in Directory.EnumerateFiles(bundle.VtpmStateDir))
            {
                File.Delete(f);
            }
            foreach (var f in Directory.EnumerateFiles(Path.Combine(folder, VmBundle.VtpmDir)))
            {
                CopyPrivate(f, Path.Combine(bundle.VtpmStateDir, Path.GetFileName(f)));
            }
            SecureFiles.WriteAtomic(Path.Combine(bundle.Directory, VmBundle.NvramFile), File.ReadAllBytes(Path.Combine(folder, SnapshotNvramFile)));
            progress?.Report("disks, vTPM state and UEFI variables put back as they were at the snapshot");
        }

        /// <summary>QEMU is up, paused, listening, its disks added: feed it the stream (verified again as it goes) and wait until it has loaded it.</summary>
        public async Task FeedAsync(QemuProcess qemu, IProgress<string>? progress, CancellationToken ct)
        {
            var socket = Path.Combine(Path.GetDirectoryName(qemu.QmpSocket)!, IncomingSocketName);
            using var conn = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await conn.ConnectAsync(new UnixDomainSocketEndPoint(socket), ct);
            RequirePeer(conn, qemu.Pid);
            _file!.Position = 0;
            SnapshotStreamInfo fed;
            await using (var ns = new NetworkStream(conn, ownsSocket: false))
            {
                try
                {
                    Started = true;
                    fed = await SnapshotStream.RestoreAsync(_file, _key!, ns, ct);
                }
                catch (SnapshotException e)
                {
                    throw new VmOperationException(e.Id, $"snapshot {info.Id}: {e.Message}; that QEMU is stopped", e);
                }
                await ns.FlushAsync(ct);
            }
            conn.Shutdown(SocketShutdown.Send);
            if (fed.Header.Fingerprint != info.Fingerprint)
            {
                throw new VmOperationException("snapshot.changed", $"snapshot {info.Id} changed between its checks; that QEMU is stopped");
            }
            var status = await WaitForMigrationAsync(qemu, TimeSpan.FromMinutes(5), ct);
            if (status != "completed")
            {
                throw new VmOperationException("vm.restore.migration", $"QEMU did not load the snapshot's state (incoming migration '{status}'): {qemu.Output}");
            }
            progress?.Report($"QEMU loaded the snapshot's state ({fed.PlaintextLength} bytes)");
        }

        public void Dispose()
        {
            _key?.Dispose();
            _file?.Dispose();
        }
    }

    /// <summary>The unix socket a QEMU started for an incoming stream (restore, migration) listens on, in its run folder.</summary>
    private const string IncomingSocketName = "incoming.sock";

    /// <summary>What a start does differently when QEMU receives a migration stream instead of booting.</summary>
    private interface IIncoming
    {
        /// <summary>Whether the guest resumes once the stream is fed (a restore) or stays paused for a later decision (a migration's commit).</summary>
        bool Resume { get; }

        /// <summary>Right after the key is released, before anything starts.</summary>
        Task PrepareAsync(VmBundle bundle, VmMasterKey vmk, IProgress<string>? progress, CancellationToken ct);

        /// <summary>QEMU is up, paused, listening, its disks added.</summary>
        Task FeedAsync(QemuProcess qemu, IProgress<string>? progress, CancellationToken ct);
    }

    /// <summary>Polls <c>query-migrate</c> until the migration (outgoing, or incoming on a restoring QEMU) is over; answers its last status.</summary>
    private static async Task<string> WaitForMigrationAsync(QemuProcess qemu, TimeSpan timeout, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (!qemu.IsRunning)
            {
                return "qemu-exited";
            }
            var status = (await qemu.Qmp.ExecuteAsync("query-migrate", null, null, ct))?["status"]?.GetValue<string>() ?? "none";
            if (status is "completed" or "failed" or "cancelled")
            {
                return status;
            }
            if (clock.Elapsed > timeout)
            {
                return "timeout (" + status + ")";
            }
            await Task.Delay(100, ct);
        }
    }

    /// <summary>
    /// The other end of a migration socket must be this VM's QEMU (<see cref="PeerCredentials"/>):
    /// another process of the same uid, or root, could otherwise connect to the agent's socket first,
    /// or stand in for the incoming socket, and its bytes would be sealed into, or read from, this
    /// VM's snapshot.
    /// </summary>
    private static void RequirePeer(Socket conn, int pid)
    {
        int peer = PeerCredentials.Of(conn)?.Pid ?? -1;
        if (peer != pid)
        {
            throw new VmOperationException("vm.snapshot.peer", $"the migration socket's peer is process {peer}, not this VM's QEMU ({pid})");
        }
    }

    private static string SnapshotPath(VmBundle bundle, string id) => Path.Combine(bundle.Directory, VmBundle.SnapshotsDir, id);

    private static VmSnapshotInfo ReadSnapshot(VmBundle bundle, string id)
    {
        var file = Path.Combine(SnapshotPath(bundle, id), SnapshotFile);
        if (!File.Exists(file))
        {
            throw new VmOperationException("vm.snapshot.not-found", $"{bundle.Config.Name} has no snapshot named {id}");
        }
        VmSnapshotInfo? info;
        try
        {
            info = JsonSerializer.Deserialize<VmSnapshotInfo>(File.ReadAllBytes(file), SnapshotJson);
        }
        catch (JsonException e)
        {
            throw new VmOperationException("vm.snapshot.format", $"{file} does not parse: {e.Message}", e);
        }
        if (info is null || info.Id != id || info.VmId != bundle.Config.VmId || info.Disks is null || info.Fingerprint is null)
        {
            throw new VmOperationException("vm.snapshot.format", $"{file} is not snapshot {id} of {bundle.Config.VmId}");
        }
        return info;
    }

    /// <summary>A copy owned by root, 0600 (sparse, reflinked where the filesystem can).</summary>
    private static void CopyPrivate(string source, string target)
    {
        File.Delete(target);
        var r = ToolProcess.Run("cp", ["--sparse=always", "--reflink=auto", "--no-preserve=all", "--", source, target]);
        if (r.ExitCode != 0)
        {
            throw new VmOperationException("vm.snapshot.copy", $"copying {Path.GetFileName(source)} failed: {r.Stderr.Trim()}");
        }
        File.SetUnixFileMode(target, SecureFiles.FileMode);
    }

    public static string CheckSnapshotName(string id) => SnapshotNamePattern().IsMatch(id)
        ? id
        : throw new VmOperationException("vm.snapshot.name", $"'{id}' is not a snapshot name: 1-63 of a-z, 0-9, '.', '-' and '_', starting with a letter or digit");

    [GeneratedRegex("^[a-z0-9][a-z0-9._-]{0,62}$")]
    private static partial Regex SnapshotNamePattern();
}

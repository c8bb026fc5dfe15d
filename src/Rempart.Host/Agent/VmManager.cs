using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.RegularExpressions;
using Rempart.Attestation.Protocol;
using Rempart.Host.Qemu;
using Rempart.Host.Vm;
using Rempart.KeyProtection;

namespace Rempart.Host.Agent;

/// <summary>A VM operation refused or failed; <see cref="Id"/> is stable (<c>vm.*</c>, or the Guardian's / a component's id).</summary>
public sealed class VmOperationException(string id, string message, Exception? inner = null) : Exception(message, inner)
{
    public string Id { get; } = id;
}

/// <summary>
/// What <c>vm create</c> asks for. Disks: the boot image as <c>system</c>, then the extra ones,
/// each an image to import (Image and Format) or a new empty disk (Image null, SizeBytes).
/// </summary>
public sealed record VmCreateRequest(
    string Name,
    string KeyProtector,
    string Image,
    string ImageFormat,
    int MemoryMiB,
    int Cpus,
    SecureBootTemplate SecureBoot,
    IReadOnlyList<(string Id, string? Image, string Format, long SizeBytes)> ExtraDisks);

/// <summary>
/// The shielded VM lifecycle on this host (issue 6 §3, DESIGN.md §4). Every start asks the
/// Guardian for the VM's key with a fresh health token (a host that is not healthy now gets no
/// key, so QEMU never starts), recovers it in the host TPM, derives the per-purpose keys and
/// wipes the VMK before the guest runs. QEMU and swtpm run as the VM user: the disks and the vTPM
/// state are handed to that user for the run and taken back at stop; the clear UEFI variable
/// store lives only in memory-backed storage and is re-encrypted at stop. A watcher per VM
/// notices QEMU's exit (stop, kill, or the guest powering off) and does that clean-up; an agent
/// restart finds running VMs again from DATA/vm-state.
/// </summary>
public sealed partial class VmManager : IAsyncDisposable
{
    public delegate Task<(VmMasterKey Key, ReleaseResponse Release)> KeyRelease(string keyProtector, CancellationToken ct);

    private readonly VmHostOptions _o;
    private readonly KeyRelease _release;
    private readonly AgentAuditLog _audit;
    private readonly KvmProbe _probe;
    private readonly QmpAllowlist _allowlist = new();
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _locks = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, RunningVm> _running = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, string> _consoles = new(StringComparer.Ordinal);
    private readonly VmUids _uids;
    private readonly CancellationTokenSource _life = new();
    private (DateTime Mtime, QemuVersion Version)? _qemuVersion;

    private sealed class RunningVm(VmRunState state, QemuProcess qemu, VtpmProcess? vtpm, NvramRunCopy? nvram)
    {
        public VmRunState State { get; } = state;
        public QemuProcess Qemu { get; } = qemu;
        public VtpmProcess? Vtpm { get; } = vtpm;
        public NvramRunCopy? Nvram { get; set; } = nvram;
        public TaskCompletionSource<string> Finished { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public string? Note { get; set; }
    }

    public VmManager(VmHostOptions options, KeyRelease release, AgentAuditLog audit)
    {
        _o = options;
        _release = release;
        _audit = audit;
        _uids = new VmUids(options.VmUidFirst, options.VmUidCount);
        _probe = new KvmProbe(options.FirmwareCode, VmBundle.TemplatePath(SecureBootTemplate.Snakeoil), options.Qemu);
        foreach (var d in new[] { options.VmsDir, options.RunDir })
        {
            Directory.CreateDirectory(d);
            File.SetUnixFileMode(d, Traversable);
        }
        SecureFiles.CreateDirectory(options.StateDir);
    }

    /// <summary>rwx--x--x: the VM user may pass through (to its own files) but not list.</summary>
    public const UnixFileMode Traversable = SecureFiles.DirMode | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;

    public AgentAuditLog Audit => _audit;

    public string BundleDir(string name) => Path.Combine(_o.VmsDir, CheckName(name));

    /// <summary>Finds VMs an earlier agent process started; those that ended meanwhile are cleaned up (which needs a release, retried until the host is healthy).</summary>
    public async Task ReattachAllAsync(CancellationToken ct)
    {
        var agentStart = DateTime.UtcNow;
        foreach (var file in Directory.EnumerateFiles(_o.StateDir, "*.json"))
        {
            var name = Path.GetFileNameWithoutExtension(file);
            VmRunState? state;
            try
            {
                state = VmRunState.Load(_o.StateDir, name);
            }
            catch (VmBundleException e)
            {
                _audit.Append("vm.reattach.failed", name, new Dictionary<string, object?> { ["reason"] = e.Message });
                continue;
            }
            if (state is null)
            {
                continue;
            }
            if (state.VmUid != 0)
            {
                _uids.Hold(name, state.VmUid);
            }
            try
            {
                var qemu = await QemuProcess.ReattachAsync(state.QmpSocket, state.PidFile, _allowlist, TimeSpan.FromSeconds(15), ct);
                var vm = new RunningVm(state, qemu, null, null);
                _running[name] = vm;
                _audit.Append("vm.reattached", name, new Dictionary<string, object?> { ["pid"] = qemu.Pid });
                _ = WatchAsync(vm);
            }
            catch (QemuProcessException e)
            {
                _audit.Append("vm.reattach.gone", name, new Dictionary<string, object?> { ["reason"] = e.Id });
                if (IsUncommittedIncoming(name, agentStart))
                {
                    // A migration copy never committed: AbandonUncommittedMigrationsAsync removes its bundle just
                    // below and keeps nothing of it, so there is nothing to re-encrypt after a release. Its run
                    // state goes now, not from a clean-up that would wait for a release on a bundle about to vanish
                    // (and so hold the VM's name as "cleaning up" against a later import or restore).
                    DiscardRun(state);
                }
                else
                {
                    _ = CleanUpAfterAsync(state, null, "ended while the agent was away");
                }
            }
        }
        await AbandonUncommittedMigrationsAsync(agentStart);
    }

    /// <summary>The run of a copy that is being thrown away: its swtpm stopped, its run files and run state removed, its uid freed.</summary>
    private void DiscardRun(VmRunState state)
    {
        StopOrphan(state.SwtpmPid, state.SwtpmSocket);
        try
        {
            File.Delete(state.NvramCopy);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        ForgetRun(state);
    }

    /// <summary>The end of every run, kept or thrown away: its run folder and run state removed, its uid freed.</summary>
    private void ForgetRun(VmRunState state)
    {
        TryDelete(state.RunDir);
        VmRunState.Delete(_o.StateDir, state.Name);
        _uids.Release(state.Name, state.VmUid);
    }

    /// <summary><c>vm create</c>: a new bundle, its disks imported or made (LUKS), NVRAM from the template, the vTPM manufactured.</summary>
    public async Task<VmStatus> CreateAsync(VmCreateRequest r, IProgress<string>? progress, CancellationToken ct)
    {
        var dir = BundleDir(r.Name);
        var gate = _locks.GetOrAdd(r.Name, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(ct);
        try
        {
            if (Directory.Exists(dir))
            {
                throw new VmOperationException("vm.exists", $"a VM named {r.Name} already exists on this host");
            }
            foreach (var image in new[] { (r.Image, r.ImageFormat) }.Concat(r.ExtraDisks.Where(d => d.Image is not null).Select(d => (d.Image!, d.Format))))
            {
                if (!Path.IsPathRooted(image.Item1) || !File.Exists(image.Item1))
                {
                    throw new VmOperationException("vm.image.missing", $"no image at {image.Item1} (an absolute path on this host)");
                }
            }
            progress?.Report("asking the Guardian for the VM's key (release to this attested host)");
            var (vmk, release) = await ReleaseAsync(r.KeyProtector, ct);
            using (vmk)
            {
                VmBundle bundle;
                try
                {
                    bundle = VmBundle.Create(dir, new VmSpec(r.Name, r.MemoryMiB, r.Cpus, r.SecureBoot), System.Text.Encoding.UTF8.GetBytes(r.KeyProtector));
                }
                catch (VmBundleException e)
                {
                    throw new VmOperationException(e.Id, e.Message, e);
                }
                try
                {
                    File.SetUnixFileMode(dir, SecureFiles.DirMode);
                    // The disks (each with QEMU's fixed LUKS calibration) and the vTPM (swtpm_setup's
                    // key generation) are independent: made at the same time, they overlap on the cores.
                    var sources = r.ExtraDisks.Select(d => new NewDiskSource(d.Id, d.Image, d.Format, d.SizeBytes))
                        .Prepend(new NewDiskSource("system", r.Image, r.ImageFormat, 0)).ToList();
                    foreach (var d in sources.Where(d => d.Image is null))
                    {
                        progress?.Report($"disk {d.Id}: new, {d.SizeBytes} bytes, LUKS AES-256-XTS");
                    }
                    await ParallelWork.AllAsync(
                    [
                        failed => bundle.AddDisksAsync(sources, vmk, DiskProgress(sources, progress), failed),
                        _ =>
                        {
                            progress?.Report($"UEFI variables from the {VmConfig.ToWire(r.SecureBoot)} template, encrypted (AES-256-GCM)");
                            bundle.CreateNvram(vmk);
                            progress?.Report("vTPM: swtpm_setup manufactures it (EK and certificates), its state encrypted");
                            bundle.CreateVtpm(vmk);
                            progress?.Report("vTPM manufactured");
                            return Task.CompletedTask;
                        },
                    ], ct);
                    foreach (var d in bundle.Config.Disks.Where(d => sources.Any(s => s.Id == d.Id && s.Image is not null)))
                    {
                        progress?.Report($"disk {d.Id}: imported ({d.SizeBytes} bytes)");
                    }
                }
                catch (Exception e)
                {
                    Directory.Delete(dir, recursive: true); // a new, incomplete bundle: nothing of value lost
                    throw e is VmBundleException b ? new VmOperationException(b.Id, b.Message, b) : e;
                }
                SealState(r.Name, bundle, "vm create");
                _audit.Append("vm.created", r.Name, new Dictionary<string, object?>
                {
                    ["vmId"] = bundle.Config.VmId, ["releaseId"] = release.ReleaseId, ["disks"] = bundle.Config.Disks.Select(d => d.Id).ToArray(),
                });
                return Status(r.Name);
            }
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>Import progress per disk, one line per disk per 10 % (the disks advance at the same time).</summary>
    private static Action<string, double>? DiskProgress(IReadOnlyList<NewDiskSource> sources, IProgress<string>? progress)
    {
        if (progress is null)
        {
            return null;
        }
        var last = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        return (id, p) =>
        {
            var source = sources.First(s => s.Id == id);
            if (source.Image is null)
            {
                return;
            }
            int pct = (int)Math.Floor(p);
            int before = last.GetOrAdd(id, -1);
            if (pct / 10 != before / 10 && last.TryUpdate(id, pct, before))
            {
                progress.Report($"disk {id}: importing {Path.GetFileName(source.Image)} into LUKS qcow2, {pct}%");
            }
        };
    }

    /// <summary>
    /// <c>vm start</c>: release → derive → swtpm → NVRAM into memory → QEMU paused → LUKS secrets
    /// and disks over QMP → VMK wiped → <c>cont</c>. Any failure undoes what was done.
    /// </summary>
    public Task<VmStatus> StartAsync(string name, IProgress<string>? progress, CancellationToken ct) => StartAsync(name, progress, null, ct);

    /// <summary>
    /// <c>vm start</c>; with <paramref name="acceptRestoredState"/>, UEFI variables and vTPM state
    /// that are not what this agent last left (<see cref="StateSeal"/>) are accepted — audited —
    /// instead of refused with <c>vm.state.rollback</c>.
    /// </summary>
    public Task<VmStatus> StartAsync(string name, bool acceptRestoredState, IProgress<string>? progress, CancellationToken ct) =>
        StartAsync(name, progress, null, ct, acceptRestoredState: acceptRestoredState);

    /// <summary>A start, or with <paramref name="incoming"/> a restore (VmManager.Snapshots.cs): the snapshot is checked after the release and before anything starts, then fed to QEMU before <c>cont</c>.</summary>
    private async Task<VmStatus> StartAsync(string name, IProgress<string>? progress, IIncoming? incoming, CancellationToken ct, KeyRelease? releaseOverride = null, bool gateHeld = false, bool acceptRestoredState = false)
    {
        var dir = BundleDir(name);
        var gate = _locks.GetOrAdd(name, _ => new SemaphoreSlim(1, 1));
        if (!gateHeld)
        {
            await gate.WaitAsync(ct);
        }
        try
        {
            if (_running.ContainsKey(name) || VmRunState.Load(_o.StateDir, name) is not null)
            {
                throw new VmOperationException("vm.running", $"{name} is already running (or still being cleaned up)");
            }
            VmBundle bundle;
            try
            {
                bundle = VmBundle.Load(dir);
            }
            catch (VmBundleException e)
            {
                throw new VmOperationException(e.Id, e.Message, e);
            }
            if (incoming is null)
            {
                CheckStateSeal(name, bundle, acceptRestoredState, progress);
            }
            var clock = Stopwatch.StartNew();
            progress?.Report("asking the Guardian for the VM's key with a fresh health token");
            var kpText = System.Text.Encoding.UTF8.GetString(File.ReadAllBytes(Path.Combine(dir, VmBundle.KeyProtectorFile)));
            var (vmk, release) = releaseOverride is null ? await ReleaseAsync(kpText, ct) : await releaseOverride(kpText, ct);
            progress?.Report($"key released (release {release.ReleaseId}) and recovered in the host TPM in {clock.ElapsedMilliseconds} ms");
            var run = Path.Combine(_o.RunDir, name);
            VtpmProcess? vtpm = null;
            NvramRunCopy? nvram = null;
            QemuProcess? qemu = null;
            UnixUser? user = null;
            try
            {
                using (vmk)
                {
                    bundle.CheckKey(vmk);
                    user = _uids.Allocate(name);
                    if (incoming is not null)
                    {
                        await incoming.PrepareAsync(bundle, vmk, progress, ct);
                    }
                    if (Directory.Exists(run))
                    {
                        Directory.Delete(run, recursive: true);
                    }
                    Directory.CreateDirectory(run, SecureFiles.DirMode);
                    Chown(user, run);
                    HandOver(bundle, user);

                    vtpm = VtpmProcess.Start(bundle.VtpmStateDir, vmk, run, runAs: user);
                    progress?.Report($"vTPM (swtpm, pid {vtpm.ProcessId}) running as {user.Name}, its state decrypted by swtpm only");
                    nvram = bundle.Nvram.OpenForRun(vmk, _o.ShmDir);
                    Chown(user, Path.GetDirectoryName(nvram.Path)!, nvram.Path);

                    var probe = await _probe.ChooseAsync(ct);
                    var caps = HostCapabilities.Detect();
                    var disks = bundle.Config.Disks.Select(d => new QemuDisk(QemuId(d.Id), Path.Combine(dir, d.File), "qcow2", "sec-" + QemuId(d.Id))).ToList();
                    var spec = new QemuLaunchSpec
                    {
                        Name = name,
                        MemoryMiB = bundle.Config.MemoryMiB,
                        Cpus = bundle.Config.Cpus,
                        Accelerator = probe.Accelerator,
                        FirmwareCode = _o.FirmwareCode,
                        NvramPath = nvram.Path,
                        SwtpmSocket = vtpm.ControlSocket,
                        Disks = disks,
                        Shielding = bundle.Config.Shielding == KeyProtection.ShieldingLevel.Shielded ? Qemu.ShieldingLevel.Shielded : Qemu.ShieldingLevel.EncryptionSupported,
                        SerialSocket = bundle.Config.Shielding == KeyProtection.ShieldingLevel.Shielded ? null : Path.Combine(run, "serial.sock"),
                        QmpSocket = Path.Combine(run, "qmp.sock"),
                        PidFile = Path.Combine(run, "qemu.pid"),
                        RunAs = user,
                        DeviceGroup = probe.Accelerator == Accelerator.Kvm ? caps.KvmGroup : null,
                        LockMemory = caps.CanLockMemory,
                        IncomingSocket = incoming is null ? null : Path.Combine(run, IncomingSocketName),
                    };
                    var version = await QemuVersionAsync(ct);
                    var invocation = QemuCommandLine.Build(spec, version, new QemuTools(Qemu: _o.Qemu));
                    qemu = await QemuProcess.StartAsync(invocation, spec, _allowlist, _o.StartTimeout, ct);
                    foreach (var (disk, conf) in disks.Zip(bundle.Config.Disks))
                    {
                        var pass = EncryptedDisk.Passphrase(vmk, conf.Id);
                        try
                        {
                            await QemuDiskCommands.AddAsync(qemu.Qmp, disk, pass, ct);
                        }
                        finally
                        {
                            System.Security.Cryptography.CryptographicOperations.ZeroMemory(pass);
                        }
                    }
                    if (incoming is not null)
                    {
                        await incoming.FeedAsync(qemu, progress, ct);
                    }
                    var state = new VmRunState(name, bundle.Config.VmId, qemu.Pid, vtpm.ProcessId, run, spec.QmpSocket, spec.PidFile, vtpm.ControlSocket,
                        spec.SerialSocket, nvram.Path, release.ReleaseId, release.AuditSeq, DateTimeOffset.UtcNow, probe.Accelerator == Accelerator.Kvm ? "kvm" : "tcg",
                        probe.Reason, invocation.RamProtection.Kind, invocation.RamProtection.MemoryLocked, invocation.RamProtection.Limits, user.Uid);
                    state.Save(_o.StateDir);
                    var vm = new RunningVm(state, qemu, vtpm, nvram);
                    _running[name] = vm;
                    if (incoming is { Resume: false })
                    {
                        vm.Note = "paused: waiting for an incoming migration";
                        _ = WatchAsync(vm);
                        return Status(name);
                    }
                    await qemu.Qmp.ExecuteAsync("cont", null, null, ct);
                    progress?.Report($"QEMU (pid {qemu.Pid}, {state.Accelerator}) running as {user.Name}, sandboxed; {disks.Count} LUKS disk(s) added over QMP; guest resumed {clock.ElapsedMilliseconds} ms after the request");
                    _audit.Append("vm.started", name, new Dictionary<string, object?>
                    {
                        ["vmId"] = state.VmId, ["releaseId"] = release.ReleaseId, ["guardianAuditSeq"] = release.AuditSeq, ["pid"] = qemu.Pid,
                        ["accelerator"] = state.Accelerator, ["ramProtection"] = state.RamProtection, ["shielding"] = ReleasePolicy.ToWire(bundle.Config.Shielding),
                    });
                    _ = WatchAsync(vm);
                    return Status(name);
                }
            }
            catch (Exception e)
            {
                _running.TryRemove(name, out _);
                qemu?.Kill();
                if (qemu is not null)
                {
                    await qemu.WaitForExitAsync(TimeSpan.FromSeconds(10), CancellationToken.None);
                    await qemu.DisposeAsync();
                }
                vtpm?.Dispose();
                try
                {
                    nvram?.Close();
                }
                catch (VmBundleException)
                {
                }
                TakeBack(bundle);
                SealState(name, bundle, "start failed");
                TryDelete(run);
                VmRunState.Delete(_o.StateDir, name);
                if (user is not null)
                {
                    _uids.Release(name, user.Uid);
                }
                _audit.Append("vm.start.failed", name, new Dictionary<string, object?> { ["reason"] = e is VmOperationException v ? v.Id : e.GetType().Name });
                throw e switch
                {
                    VmOperationException => e,
                    VmBundleException b => new VmOperationException(b.Id, b.Message, b),
                    QemuProcessException q => new VmOperationException(q.Id, q.Message, q),
                    QemuConfigurationException q => new VmOperationException(q.Id, q.Message, q),
                    _ => new VmOperationException("vm.start.failed", e.Message, e),
                };
            }
        }
        finally
        {
            if (!gateHeld)
            {
                gate.Release();
            }
        }
    }

    /// <summary>
    /// <c>vm stop</c> (ACPI power button, then QMP <c>quit</c> after <paramref name="grace"/>) or
    /// <c>vm kill</c> (<paramref name="force"/>: SIGKILL). Returns when the clean-up is done.
    /// </summary>
    public async Task<VmStatus> StopAsync(string name, bool force, TimeSpan grace, CancellationToken ct)
    {
        if (!_running.TryGetValue(CheckName(name), out var vm))
        {
            throw new VmOperationException("vm.not-running", $"{name} is not running");
        }
        if (force)
        {
            vm.Qemu.Kill();
        }
        else
        {
            await TryQmpAsync(vm, "system_powerdown");
            if (!await vm.Qemu.WaitForExitAsync(grace, ct))
            {
                await TryQmpAsync(vm, "quit");
                if (!await vm.Qemu.WaitForExitAsync(TimeSpan.FromSeconds(20), ct))
                {
                    vm.Qemu.Kill();
                }
            }
        }
        try
        {
            await vm.Finished.Task.WaitAsync(TimeSpan.FromMinutes(5), ct);
        }
        catch (TimeoutException)
        {
            throw new VmOperationException("vm.stop.timeout", $"QEMU of {name} is gone but its clean-up has not finished after 5 minutes (see rempart host audit)");
        }
        _audit.Append(force ? "vm.killed" : "vm.stopped", name);
        return Status(name);
    }

    /// <summary>
    /// Opens the console of a running encryption-supported VM: refused (and audited) for a shielded
    /// one, <c>vm.console.busy</c> while another session is open. The agent connects to QEMU's
    /// serial socket itself and records <c>vm.console.opened</c> (who the client says it is, and
    /// who the kernel says it is); <see cref="ConsoleSession.RelayAsync"/> records <c>vm.console.closed</c>.
    /// </summary>
    public async Task<ConsoleSession> OpenConsoleAsync(string name, string who, PeerCredentials? peer, CancellationToken ct)
    {
        var bundle = Load(name);
        var by = new Dictionary<string, object?> { ["by"] = who, ["peerUid"] = peer?.Uid, ["peerPid"] = peer?.Pid };
        if (bundle.Config.Shielding == KeyProtection.ShieldingLevel.Shielded)
        {
            _audit.Append("vm.console.refused", name, new Dictionary<string, object?>(by) { ["reason"] = "shielded" });
            throw new VmOperationException("vm.console.shielded", $"{name} is shielded: it has no console, by design (DESIGN.md G7)");
        }
        if (!_running.TryGetValue(name, out var vm) || vm.State.SerialSocket is null)
        {
            throw new VmOperationException("vm.not-running", $"{name} is not running");
        }
        var id = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8));
        if (!_consoles.TryAdd(name, id))
        {
            throw new VmOperationException("vm.console.busy", $"a console session of {name} is already open (session {_consoles.GetValueOrDefault(name)}); one at a time — close it first");
        }
        var serial = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct, _life.Token);
            timeout.CancelAfter(TimeSpan.FromSeconds(10));
            await serial.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(vm.State.SerialSocket), timeout.Token);
        }
        catch (Exception e) when (e is System.Net.Sockets.SocketException or OperationCanceledException)
        {
            serial.Dispose();
            _consoles.TryRemove(name, out _);
            throw new VmOperationException("vm.console.connect", $"the serial socket of {name} does not answer: {e.Message}");
        }
        _audit.Append("vm.console.opened", name, new Dictionary<string, object?>(by) { ["session"] = id });
        return new ConsoleSession(id, serial,
            closed => _audit.Append("vm.console.closed", name, new Dictionary<string, object?>
            {
                ["session"] = id, ["endedBy"] = closed.EndedBy, ["bytesToVm"] = closed.BytesToVm,
                ["bytesFromVm"] = closed.BytesFromVm, ["durationMs"] = closed.DurationMs,
            }),
            () => _consoles.TryRemove(new KeyValuePair<string, string>(name, id)));
    }

    /// <summary>The agent's stop: console relays end (recorded as ended by the agent).</summary>
    public CancellationToken Stopping => _life.Token;

    /// <summary>A QMP command on a running VM, through the allowlist (refusals are <c>qmp.refused.*</c>).</summary>
    public async Task<System.Text.Json.Nodes.JsonNode?> QmpAsync(string name, string command, System.Text.Json.Nodes.JsonObject? args, CancellationToken ct)
    {
        if (!_running.TryGetValue(CheckName(name), out var vm))
        {
            throw new VmOperationException("vm.not-running", $"{name} is not running");
        }
        try
        {
            return await vm.Qemu.Qmp.ExecuteAsync(command, args, null, ct);
        }
        catch (QmpRefusedException e)
        {
            _audit.Append("vm.qmp.refused", name, new Dictionary<string, object?> { ["command"] = command, ["reason"] = e.RefusalId });
            throw new VmOperationException(e.RefusalId, e.Message, e);
        }
    }

    public IReadOnlyList<VmStatus> List() =>
        [.. Directory.EnumerateDirectories(_o.VmsDir).Select(Path.GetFileName).Where(n => n is not null && NamePattern().IsMatch(n)).Order(StringComparer.Ordinal).Select(n => Status(n!))];

    public VmStatus Status(string name)
    {
        var bundle = Load(name);
        var c = bundle.Config;
        var disks = c.Disks.Select(d => $"{d.Id} ({d.SizeBytes} bytes, {VmDisk.FormatName})").ToList();
        var shielding = ReleasePolicy.ToWire(c.Shielding);
        if (_running.TryGetValue(name, out var vm))
        {
            var s = vm.State;
            string state = vm.Finished.Task.IsCompleted ? "stopped" : vm.Qemu.IsRunning ? "running" : "stopping";
            return new VmStatus(name, c.VmId, state, shielding, c.MemoryMiB, c.Cpus, disks, s.QemuPid, s.Accelerator,
                s.RamProtection, s.MemoryLocked, s.RamLimits, s.ReleaseId, s.StartedAt, vm.Note);
        }
        if (VmRunState.Load(_o.StateDir, name) is { } left)
        {
            return new VmStatus(name, c.VmId, "cleaning-up", shielding, c.MemoryMiB, c.Cpus, disks, null, left.Accelerator, left.RamProtection,
                left.MemoryLocked, left.RamLimits, left.ReleaseId, left.StartedAt, "QEMU ended; the variable store waits for a release to be re-encrypted");
        }
        return new VmStatus(name, c.VmId, "stopped", shielding, c.MemoryMiB, c.Cpus, disks, null, null, null, null, null, null, null, null);
    }

    private VmBundle Load(string name)
    {
        try
        {
            return VmBundle.Load(BundleDir(name));
        }
        catch (VmBundleException e) when (e.Id == "bundle.missing" && !Directory.Exists(BundleDir(name)))
        {
            throw new VmOperationException("vm.not-found", $"no VM named {name} on this host", e);
        }
        catch (VmBundleException e)
        {
            throw new VmOperationException(e.Id, e.Message, e);
        }
    }

    private async Task<(VmMasterKey, ReleaseResponse)> ReleaseAsync(string kp, CancellationToken ct)
    {
        try
        {
            return await _release(kp, ct);
        }
        catch (HostAgentException e)
        {
            throw new VmOperationException(e.Id, e.Message, e);
        }
        catch (Guardian.GuardianException e)
        {
            throw new VmOperationException(e.Id, $"the Guardian refused the key release: {e.Message}", e);
        }
        catch (Keys.ReleaseUnwrapException e)
        {
            throw new VmOperationException(e.Id, e.Message, e);
        }
        catch (KeyProtectorException e)
        {
            throw new VmOperationException("vm." + e.Id, e.Message, e);
        }
    }

    private async Task WatchAsync(RunningVm vm)
    {
        try
        {
            await vm.Qemu.WaitForExitAsync(Timeout.InfiniteTimeSpan, _life.Token);
        }
        catch (OperationCanceledException)
        {
            return; // the agent is going away; the VM keeps running
        }
        string note;
        try
        {
            try
            {
                await vm.Qemu.DisposeAsync();
            }
            catch (Exception e) when (e is QmpProtocolException or IOException or InvalidOperationException)
            {
                // QMP died with QEMU; nothing to close
            }
            var said = vm.Qemu.Output;
            note = await CleanUpAfterAsync(vm.State, vm, said.Length == 0 ? "QEMU exited" : $"QEMU exited: {said.Split('\n')[^1]}");
        }
        catch (Exception e)
        {
            // Never leave a stop waiting: say what failed (no secret is in these messages) and keep the state record for a retry.
            note = $"clean-up failed: {e.GetType().Name}: {e.Message}";
            _audit.Append("vm.cleanup.failed", vm.State.Name, new Dictionary<string, object?> { ["reason"] = note });
        }
        vm.Note = note;
        _running.TryRemove(vm.State.Name, out _);
        vm.Finished.TrySetResult(note);
    }

    /// <summary>After QEMU is gone: swtpm ends, the NVRAM is re-encrypted (a reattached VM needs a release for that key, retried), files go back to root, run folder removed.</summary>
    private async Task<string> CleanUpAfterAsync(VmRunState state, RunningVm? vm, string why)
    {
        if (vm?.Vtpm is { } v)
        {
            v.Dispose();
        }
        else
        {
            StopOrphan(state.SwtpmPid, state.SwtpmSocket);
        }
        string note = why;
        var dir = BundleDir(state.Name);
        if (vm?.Nvram is { } n)
        {
            n.Close();
            note += n.Changed ? "; UEFI variables changed and re-encrypted" : "; UEFI variables unchanged";
        }
        else if (File.Exists(state.NvramCopy))
        {
            for (int attempt = 0; ; attempt++)
            {
                try
                {
                    var (vmk, _) = await ReleaseAsync(File.ReadAllText(Path.Combine(dir, VmBundle.KeyProtectorFile)), _life.Token);
                    using (vmk)
                    {
                        using var copy = VmBundle.Load(dir).Nvram.AdoptRunCopy(vmk, state.NvramCopy);
                        copy.Close();
                    }
                    note += "; UEFI variables re-encrypted after a new release";
                    break;
                }
                catch (VmOperationException e) when (attempt < 1000)
                {
                    _audit.Append("vm.cleanup.waiting", state.Name, new Dictionary<string, object?> { ["reason"] = e.Id });
                    try
                    {
                        await Task.Delay(TimeSpan.FromSeconds(10), _life.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        return note + "; clean-up postponed (agent stopping)";
                    }
                }
            }
        }
        try
        {
            var bundle = VmBundle.Load(dir);
            TakeBack(bundle);
            SealState(state.Name, bundle, "run ended");
        }
        catch (VmBundleException)
        {
        }
        ForgetRun(state);
        _audit.Append("vm.ended", state.Name, new Dictionary<string, object?> { ["note"] = note });
        return note;
    }

    /// <summary>
    /// Refuses to start on UEFI variables or vTPM state other than what this agent last left
    /// (<see cref="StateSeal"/>): an older authentic copy put back. A VM without a seal (made by
    /// an earlier agent) is sealed as it is now. Nothing has been released or started yet.
    /// </summary>
    private void CheckStateSeal(string name, VmBundle bundle, bool accept, IProgress<string>? progress)
    {
        var recorded = StateSeal.Load(_o.StateDir, name);
        if (recorded is null)
        {
            StateSeal.Record(_o.StateDir, name, bundle, "first start with a seal");
            _audit.Append("vm.state.sealed", name, new Dictionary<string, object?> { ["reason"] = "no seal yet: the current state is taken as this agent's" });
            return;
        }
        var differs = StateSeal.Of(bundle, "start").Differences(recorded);
        if (differs.Count == 0)
        {
            progress?.Report("UEFI variables and vTPM state are the ones this agent left (no rollback)");
            return;
        }
        var details = new Dictionary<string, object?> { ["differs"] = differs.ToArray(), ["sealedAt"] = recorded.At, ["sealedBy"] = recorded.By };
        if (!accept)
        {
            _audit.Append("vm.state.rollback", name, details);
            throw new VmOperationException("vm.state.rollback",
                $"{name}: the {string.Join(" and the ", differs)} are not what this agent left ({recorded.By}, {recorded.At:yyyy-MM-dd HH:mm:ss}Z): an older copy put back? Nothing was started. If you restored them on purpose (a backup), start with --accept-restored-state (audited)");
        }
        _audit.Append("vm.state.accepted", name, details);
        progress?.Report($"the {string.Join(" and the ", differs)} differ from what this agent left; accepted as asked (audited)");
        StateSeal.Record(_o.StateDir, name, bundle, "accepted at start");
    }

    /// <summary>Records what the bundle's variables and vTPM state are now; a failure to read them is audited, not thrown (the next start then refuses, failing closed).</summary>
    private void SealState(string name, VmBundle bundle, string by)
    {
        try
        {
            StateSeal.Record(_o.StateDir, name, bundle, by);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _audit.Append("vm.state.seal-failed", name, new Dictionary<string, object?> { ["reason"] = e.Message });
        }
    }

    /// <summary>The VM user gets its disks and vTPM state for the run; the bundle folders become traversable (not listable).</summary>
    private static void HandOver(VmBundle bundle, UnixUser user)
    {
        File.SetUnixFileMode(bundle.Directory, Traversable);
        File.SetUnixFileMode(Path.Combine(bundle.Directory, VmBundle.DisksDir), Traversable);
        var files = bundle.Config.Disks.Select(d => Path.Combine(bundle.Directory, d.File))
            .Append(bundle.VtpmStateDir).Concat(Directory.EnumerateFiles(bundle.VtpmStateDir));
        Chown(user, [.. files]);
    }

    /// <summary>Back to root-owned, owner-only modes.</summary>
    private static void TakeBack(VmBundle bundle)
    {
        var root = new UnixUser("root", 0, 0);
        var files = bundle.Config.Disks.Select(d => Path.Combine(bundle.Directory, d.File)).Where(File.Exists)
            .Append(bundle.VtpmStateDir).Concat(Directory.EnumerateFiles(bundle.VtpmStateDir));
        Chown(root, [.. files]);
        File.SetUnixFileMode(Path.Combine(bundle.Directory, VmBundle.DisksDir), SecureFiles.DirMode);
        File.SetUnixFileMode(bundle.Directory, SecureFiles.DirMode);
    }

    private static void Chown(UnixUser user, params string[] paths)
    {
        if (paths.Length == 0)
        {
            return;
        }
        var r = ToolProcess.Run("chown", ["-h", $"{user.Uid}:{user.Gid}", "--", .. paths]);
        if (r.ExitCode != 0)
        {
            throw new VmOperationException("vm.chown", $"chown to {user.Name} failed: {r.Stderr.Trim()}");
        }
    }

    /// <summary>swtpm of a VM found after an agent restart: it ends when QEMU closes its control channel; killed if not, after checking the pid is that swtpm.</summary>
    private static void StopOrphan(int pid, string ctrlSocket)
    {
        for (int i = 0; i < 50 && QemuProcess.Alive(pid); i++)
        {
            Thread.Sleep(100);
        }
        try
        {
            if (QemuProcess.Alive(pid) && File.ReadAllText($"/proc/{pid}/cmdline").Contains(ctrlSocket, StringComparison.Ordinal))
            {
                using var p = Process.GetProcessById(pid);
                p.Kill();
                for (int i = 0; i < 50 && QemuProcess.Alive(pid); i++)
                {
                    Thread.Sleep(100); // gone before its state files are hashed (StateSeal)
                }
            }
        }
        catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException)
        {
        }
    }

    private static async Task TryQmpAsync(RunningVm vm, string command)
    {
        try
        {
            await vm.Qemu.Qmp.ExecuteAsync(command, null, null, CancellationToken.None);
        }
        catch (Exception e) when (e is QmpProtocolException or QmpException or IOException or TimeoutException or OperationCanceledException or ObjectDisposedException)
        {
            // QEMU may close QMP as it quits, and the watcher then disposes the client under a pending command.
        }
    }

    /// <summary>The installed QEMU's version, asked once per binary (its mtime): 25-45 ms a start otherwise.</summary>
    private async Task<QemuVersion> QemuVersionAsync(CancellationToken ct)
    {
        var mtime = File.GetLastWriteTimeUtc(_o.Qemu);
        if (_qemuVersion is { } known && known.Mtime == mtime)
        {
            return known.Version;
        }
        var version = QemuVersion.Parse(await ToolOutputAsync(_o.Qemu, "--version", ct));
        _qemuVersion = (mtime, version);
        return version;
    }

    private static async Task<string> ToolOutputAsync(string tool, string arg, CancellationToken ct)
    {
        var psi = new ProcessStartInfo(tool, arg) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var p = Process.Start(psi) ?? throw new VmOperationException("vm.tool", $"cannot run {tool}");
        var text = await p.StandardOutput.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct);
        return text;
    }

    private static void TryDelete(string dir)
    {
        try
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        catch (IOException)
        {
        }
    }

    /// <summary>A disk id as a QEMU id ([A-Za-z][A-Za-z0-9_-]{0,31}); bundle ids also allow '.', and a leading digit.</summary>
    private static string QemuId(string id) => "d-" + id.Replace('.', '_');

    public static string CheckName(string name) => NamePattern().IsMatch(name)
        ? name
        : throw new VmOperationException("vm.name", $"'{name}' is not a VM name: 1-63 of a-z, 0-9 and '-', starting with a letter or digit");

    [GeneratedRegex("^[a-z0-9][a-z0-9-]{0,62}$")]
    private static partial Regex NamePattern();

    public async ValueTask DisposeAsync()
    {
        await _life.CancelAsync();
        foreach (var vm in _running.Values)
        {
            await vm.Qemu.DisposeAsync(); // closes QMP; the VM keeps running
        }
        _running.Clear();
        _life.Dispose();
    }
}

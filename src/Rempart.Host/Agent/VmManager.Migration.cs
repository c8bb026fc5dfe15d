using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Rempart.Attestation.Protocol;
using Rempart.Host.Migration;
using Rempart.Host.Qemu;
using Rempart.Host.Vm;
using Rempart.KeyProtection;

namespace Rempart.Host.Agent;

/// <summary>What <c>vm migrate</c> reports.</summary>
public sealed record VmMigrationResult(
    string Name,
    string MigrationId,
    string Destination,
    string DestinationHost,
    long StreamBytes,
    long FileBytes,
    long DowntimeMs,
    long TotalMs);

/// <summary>
/// Live migration between two attested hosts (issue 7 §2, docs/migration.md). The source agent
/// connects to the destination agent's migration listener; the Guardian authorises the migration
/// (both hosts healthy now, both groups allowed by the key protector) and releases the VM's key to
/// each host separately; the two agents derive the channel keys from shares only their TPMs can
/// open plus the VM key, and everything after that — the bundle's files (all ciphertext already),
/// QEMU's migration stream (RAM, devices, the vTPM's state blobs, the UEFI pflash) and the disks'
/// last changes — travels in AES-256-GCM records. QEMU's stream is taken and fed through unix
/// sockets only the agents use (SO_PEERCRED-checked), never through a network socket of QEMU's.
/// The source keeps its VM until the destination has loaded the state and resumed it on a commit;
/// any failure before the commit cancels the migration and the source VM runs on, intact.
/// </summary>
public sealed partial class VmManager
{
    private const int ChunkSize = 1 << 20;
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(90);

    /// <summary>The attestation side of this host (set by the agent; migrations are refused without it).</summary>
    public IMigrationHost? MigrationHost { get; set; }

    private IMigrationHost Host => MigrationHost ?? throw new VmOperationException("vm.migrate.unavailable", "this agent has no attestation side (migrations need one)");

    /// <summary><c>vm migrate NAME --to ADDR:PORT</c>: the source side.</summary>
    public async Task<VmMigrationResult> MigrateAsync(string name, string to, IProgress<string>? progress, CancellationToken ct)
    {
        CheckName(name);
        if (!IPEndPoint.TryParse(to, out var target) || target.Port == 0)
        {
            throw new VmOperationException("vm.migrate.target", $"'{to}' is not ADDR:PORT (the destination agent's --migration-listen)");
        }
        var gate = _locks.GetOrAdd(name, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(ct);
        var clock = Stopwatch.StartNew();
        string? migrationId = null;
        HostCredential? me = null;
        string phase = "connect";
        bool migrating = false, paused = false, wasRunning = false, committed = false, confirmed = false;
        string destinationHost = "?";
        RunningVm? vm = null;
        SecureChannel? channel = null;
        string uri = "";
        try
        {
            if (!_running.TryGetValue(name, out vm) || !vm.Qemu.IsRunning)
            {
                throw new VmOperationException("vm.not-running", $"{name} is not running: live migration moves a running VM (a stopped one is a bundle copy)");
            }
            var bundle = Load(name);
            var kp = await File.ReadAllTextAsync(Path.Combine(bundle.Directory, VmBundle.KeyProtectorFile), ct);
            me = Host.CurrentCredential();
            progress?.Report($"connecting to the destination agent at {target}");
            using var tcp = new TcpClient(target.AddressFamily) { NoDelay = true };
            using (var connect = Deadline(ct, TimeSpan.FromSeconds(15)))
            {
                try
                {
                    await tcp.ConnectAsync(target, connect.Token);
                }
                catch (Exception e) when (e is SocketException or OperationCanceledException && !ct.IsCancellationRequested)
                {
                    throw new VmOperationException("vm.migrate.connect", $"cannot reach a migration listener at {target}: {e.Message}");
                }
            }
            channel = new SecureChannel(tcp.GetStream());
            phase = "handshake";
            var binding = await Step(c => channel.ProtectHandshakeAsync(initiator: true, MigrationKeys.Protocol, c), ct);
            // The destination speaks first; nothing about the VM goes out before it proved it is the attested host (below).
            var hello = SecureChannel.Expect(await Step(channel.ReceiveHandshakeAsync, ct), "hello");
            var destinationToken = Text(hello, "token", 16 * 1024);
            destinationHost = Text(hello, "hostId", 200);

            phase = "authorise";
            progress?.Report($"asking the Guardian to authorise {name} to move to host {SecureChannel.Printable(destinationHost, 80)} (both hosts must be healthy now)");
            MigrationAuthorisation auth;
            try
            {
                auth = await Host.AuthoriseMigrationAsync(kp, destinationToken, me, ct);
            }
            catch (Guardian.GuardianException e)
            {
                throw new VmOperationException(e.Id, $"the Guardian refused the migration: {e.Message}", e);
            }
            migrationId = auth.MigrationId;
            if (auth.Destination.HostId != destinationHost || auth.Source.HostId != me.HostId || auth.VmId != bundle.Config.VmId)
            {
                throw new VmOperationException("vm.migrate.authorisation", "the Guardian's authorisation names other hosts or another VM than this migration's");
            }
            byte[] wrappedKs, ks = RandomNumberGenerator.GetBytes(MigrationKeys.ShareLength);
            MigrationKeys.Schedule keys;
            try
            {
                using var vmk = await Host.UnwrapAsync(auth.SourceRelease, kp, me, ct);
                bundle.CheckKey(vmk);
                wrappedKs = MigrationKeys.WrapShare(MigrationKeys.PeerBindingKey(auth.Destination), ks, auth.MigrationId, 's');
                phase = "destination-proof";
                await channel.SendHandshakeAsync(new JsonObject
                {
                    ["type"] = "challenge", ["migrationId"] = auth.MigrationId, ["wrappedShare"] = Convert.ToBase64String(wrappedKs),
                }, ct);
                var proof = SecureChannel.Expect(await Step(channel.ReceiveHandshakeAsync, ct), "proof");
                MigrationKeys.CheckDestinationProof(ks, binding, auth.MigrationId, Base64(proof, "proof"));
                // The peer of this connection opened Ks in the attested destination's TPM: now it may learn which VM moves.
                await channel.SendHandshakeAsync(new JsonObject
                {
                    ["type"] = "offer", ["vm"] = name, ["vmId"] = bundle.Config.VmId, ["kpId"] = bundle.KeyProtector.KpId, ["keyProtector"] = kp,
                }, ct);
                phase = "key-agreement";
                var accept = SecureChannel.Expect(await Step(channel.ReceiveHandshakeAsync, ct), "accept");
                var wrappedKd = Base64(accept, "wrappedShare");
                var kd = await Host.DecryptShareAsync(wrappedKd, MigrationKeys.DecryptLabel(auth.MigrationId, 'd'), me, ct);
                try
                {
                    keys = new MigrationKeys.Schedule(ks, kd, vmk, auth.MigrationId,
                        MigrationKeys.Transcript(auth.MigrationId, auth.VmId, auth.Source, auth.Destination, wrappedKs, wrappedKd, binding));
                }
                finally
                {
                    CryptographicOperations.ZeroMemory(kd);
                }
                using (keys)
                {
                    keys.CheckConfirmation("destination", Base64(accept, "confirm"));
                    channel.Key(keys.SourceToDestination, keys.DestinationToSource);
                    await channel.SendControlAsync(new JsonObject { ["type"] = "confirm", ["confirm"] = Convert.ToBase64String(keys.Confirmation("source")) }, ct);
                }
            }
            finally
            {
                CryptographicOperations.ZeroMemory(ks);
            }
            progress?.Report($"migration {auth.MigrationId} authorised; channel keyed (shares opened by both TPMs, AES-256-GCM records)");

            phase = "bundle";
            var files = BundleFiles(bundle.Directory);
            await channel.SendControlAsync(new JsonObject
            {
                ["type"] = "bundle", ["files"] = new JsonArray([.. files.Select(f => (JsonNode)new JsonObject { ["path"] = f.Path, ["size"] = f.Size })]),
            }, ct);
            var sent = new Dictionary<int, byte[]?[]>(); // disk file index → its pieces' hashes as copied
            long fileBytes = 0;
            for (int i = 0; i < files.Count; i++)
            {
                bool disk = files[i].Path.StartsWith(VmBundle.DisksDir + "/", StringComparison.Ordinal);
                var (bytes, hashes) = await SendFileAsync(channel, i, Path.Combine(bundle.Directory, files[i].Path), null, disk, ct);
                fileBytes += bytes;
                if (disk)
                {
                    sent[i] = hashes!; // only the disks change while the guest runs: their pieces are compared at the switch-over
                }
            }
            await channel.SendControlAsync(new JsonObject { ["type"] = "files-done" }, ct);
            progress?.Report($"bundle copied while the guest runs: {files.Count} files (disks LUKS, vTPM and variables encrypted), {fileBytes} bytes sent");
            SecureChannel.Expect(await Step(channel.ReceiveControlAsync, ct, TimeSpan.FromMinutes(3)), "ready");
            progress?.Report("the destination's QEMU is up, paused, waiting for the stream");

            phase = "stream";
            wasRunning = (await vm.Qemu.Qmp.ExecuteAsync("query-status", null, null, ct))?["status"]?.GetValue<string>() == "running";
            await vm.Qemu.Qmp.ExecuteAsync("migrate-set-capabilities", new JsonObject
            {
                ["capabilities"] = new JsonArray(new JsonObject { ["capability"] = "pause-before-switchover", ["state"] = true }),
            }, null, ct);
            await vm.Qemu.Qmp.ExecuteAsync("migrate-set-parameters", new JsonObject { ["max-bandwidth"] = 8L << 30, ["downtime-limit"] = 300 }, null, ct);
            var socketPath = Path.Combine(vm.State.RunDir, $"migrate-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6))}.sock");
            uri = "unix:" + socketPath;
            using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            listener.Bind(new UnixDomainSocketEndPoint(socketPath));
            listener.Listen(1);
            Chown(vm.State.RunUser(_o.VmUser), socketPath);
            vm.Qemu.Qmp.Allowlist.AllowMigrationTo(uri);
            await vm.Qemu.Qmp.ExecuteAsync("migrate", new JsonObject { ["uri"] = uri }, null, ct);
            migrating = true;
            Socket conn;
            using (var accept = Deadline(ct, TimeSpan.FromSeconds(60)))
            {
                conn = await listener.AcceptAsync(accept.Token);
            }
            File.Delete(socketPath);
            vm.Qemu.Qmp.Allowlist.RevokeMigrationTo(uri);
            using var _conn = conn;
            RequirePeer(conn, vm.Qemu.Pid);
            progress?.Report("QEMU's migration stream flows through the channel (RAM while the guest runs)");
            using var pumpStop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var pump = MigrationRelay.PumpOutAsync(conn, channel, pumpStop.Token);
            long downtimeStart = 0;
            bool switched = false;
            string status;
            while (true)
            {
                if (pump.IsFaulted)
                {
                    await pump; // the channel broke: its exception says how
                }
                status = (await vm.Qemu.Qmp.ExecuteAsync("query-migrate", null, null, ct))?["status"]?.GetValue<string>() ?? "none";
                if (status == "pre-switchover" && !switched)
                {
                    switched = true;
                    // The guest is paused and QEMU has drained and flushed its disks: send what changed since the copy, then let QEMU finish.
                    paused = true;
                    downtimeStart = clock.ElapsedMilliseconds;
                    long delta = 0;
                    foreach (var (i, hashes) in sent)
                    {
                        var (bytes, _) = await SendFileAsync(channel, i, Path.Combine(bundle.Directory, files[i].Path), hashes, false, ct);
                        delta += bytes;
                    }
                    fileBytes += delta;
                    await channel.SendControlAsync(new JsonObject { ["type"] = "disks-final" }, ct);
                    progress?.Report($"guest paused for the switch-over; the disks' last changes sent ({delta} bytes)");
                    await vm.Qemu.Qmp.ExecuteAsync("migrate-continue", new JsonObject { ["state"] = "pre-switchover" }, null, ct);
                }
                else if (status is "completed" or "failed" or "cancelled")
                {
                    break;
                }
                else if (!vm.Qemu.IsRunning)
                {
                    throw new VmOperationException("vm.migrate.qemu-exited", $"QEMU of {name} exited during the migration");
                }
                await Task.Delay(50, ct);
            }
            if (status != "completed")
            {
                var why = (await vm.Qemu.Qmp.ExecuteAsync("query-migrate", null, null, ct))?["error-desc"]?.GetValue<string>();
                throw new VmOperationException("vm.migrate.stream", $"QEMU's migration ended '{status}'{(why is null ? "" : ": " + why)}");
            }
            long streamBytes = await pump;
            migrating = false;
            await channel.SendControlAsync(new JsonObject { ["type"] = "stream-end", ["bytes"] = streamBytes }, ct);

            phase = "commit";
            SecureChannel.Expect(await Step(channel.ReceiveControlAsync, ct, TimeSpan.FromMinutes(5)), "prepared");
            committed = true; // from here the destination may run the guest: the source must never resume it on its own
            await channel.SendControlAsync(new JsonObject { ["type"] = "commit", ["resume"] = wasRunning }, ct);
            SecureChannel.Expect(await Step(channel.ReceiveControlAsync, ct), "running");
            confirmed = true; // the guest runs at the destination: what fails from here is this host's clean-up
            phase = "clean-up";
            long downtime = clock.ElapsedMilliseconds - downtimeStart;
            progress?.Report($"the guest runs on the destination ({downtime} ms paused); stopping it here and removing this host's copy");

            vm.Note = $"migrated to {destinationHost} (migration {migrationId})";
            await TryQmpAsync(vm, "quit");
            if (!await vm.Qemu.WaitForExitAsync(TimeSpan.FromSeconds(20), ct))
            {
                vm.Qemu.Kill();
            }
            await vm.Finished.Task.WaitAsync(TimeSpan.FromMinutes(5), ct);
            Directory.Delete(bundle.Directory, recursive: true);
            StateSeal.Delete(_o.StateDir, name);
            var result = new VmMigrationResult(name, auth.MigrationId, target.ToString(), destinationHost, streamBytes, fileBytes, downtime, clock.ElapsedMilliseconds);
            _audit.Append("vm.migrated", name, new Dictionary<string, object?>
            {
                ["migrationId"] = auth.MigrationId, ["to"] = destinationHost, ["address"] = target.ToString(), ["releaseId"] = auth.SourceRelease.ReleaseId,
                ["streamBytes"] = streamBytes, ["fileBytes"] = fileBytes, ["downtimeMs"] = downtime,
            });
            await ReportAsync(me, migrationId, "completed", null);
            return result;
        }
        catch (Exception e)
        {
            if (vm is not null && uri.Length > 0)
            {
                vm.Qemu.Qmp.Allowlist.RevokeMigrationTo(uri);
            }
            var id = e switch
            {
                VmOperationException v => v.Id,
                MigrationChannelException c => c.Id,
                HostAgentException h => h.Id,
                Keys.ReleaseUnwrapException u => u.Id,
                OperationCanceledException => "vm.migrate.timeout",
                _ => "vm.migrate.failed",
            };
            if (confirmed)
            {
                // The migration succeeded; only removing this host's copy failed. Never resume it here.
                _audit.Append("vm.migrated.cleanup-failed", name, new Dictionary<string, object?> { ["migrationId"] = migrationId, ["to"] = destinationHost, ["reason"] = id });
                await ReportAsync(me!, migrationId!, "completed", $"source clean-up: {id}");
                throw new VmOperationException("vm.migrate.cleanup",
                    $"{name} runs on host {destinationHost} now (migration {migrationId}), but removing it here failed: {e.Message}; remove what is left with rempart vm kill / vm delete {name}", e);
            }
            if (channel is not null && e is not MigrationChannelException)
            {
                await TellAsync(channel, id, $"the source failed during {phase}: {e.Message}");
            }
            string outcome = "failed";
            if (committed)
            {
                // The destination may be running the guest: resuming here could run it twice. Leave it paused and say so.
                outcome = "unknown";
                if (vm is not null)
                {
                    vm.Note = $"migration {migrationId} outcome unknown: paused here; check the destination before stopping or resuming";
                }
            }
            else if (vm is not null && vm.Qemu.IsRunning)
            {
                if (migrating)
                {
                    await TryQmpAsync(vm, "migrate_cancel");
                    await WaitForMigrationEndAsync(vm.Qemu);
                }
                if ((paused || migrating) && wasRunning && await QueryStatusAsync(vm) is not "running")
                {
                    await TryQmpAsync(vm, "cont");
                }
            }
            _audit.Append(committed ? "vm.migrate.unknown" : "vm.migrate.failed", name, new Dictionary<string, object?>
            {
                ["migrationId"] = migrationId, ["phase"] = phase, ["reason"] = id,
                ["sourceState"] = vm is null ? null : await QueryStatusAsync(vm),
            });
            if (me is not null && migrationId is not null)
            {
                await ReportAsync(me, migrationId, outcome, $"{phase}: {id}");
            }
            var message = committed
                ? $"the destination was told to resume {name} but did not confirm ({e.Message}); {name} stays paused here: check the destination (rempart vm status {name} there) before stopping it here"
                : $"migration of {name} failed during {phase}: {e.Message}; {name} keeps running here";
            throw new VmOperationException(committed ? "vm.migrate.unknown" : id, message, e);
        }
        finally
        {
            if (channel is not null)
            {
                await channel.DisposeAsync();
            }
            gate.Release();
        }
    }

    /// <summary>Accepts migrations on <see cref="VmHostOptions.MigrationListen"/> until <paramref name="ct"/> ends; each connection is one migration.</summary>
    public async Task ListenForMigrationsAsync(CancellationToken ct)
    {
        if (_o.MigrationListen is not { } endpoint)
        {
            return;
        }
        var listener = new TcpListener(endpoint);
        var connections = new SemaphoreSlim(MaxMigrationConnections); // not disposed: connections still running release it after the listener stops
        var perAddress = new Dictionary<IPAddress, int>(); // open connections by peer address, under its own lock
        listener.Start();
        _audit.Append("agent.migration-listener", "agent", new Dictionary<string, object?> { ["address"] = endpoint.ToString() });
        try
        {
            while (!ct.IsCancellationRequested)
            {
                TcpClient client;
                try
                {
                    client = await listener.AcceptTcpClientAsync(ct);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                var address = client.Client.RemoteEndPoint is IPEndPoint remote
                    ? (remote.Address.IsIPv4MappedToIPv6 ? remote.Address.MapToIPv4() : remote.Address)
                    : IPAddress.None;
                if (!connections.Wait(0))
                {
                    client.Dispose(); // more than MaxMigrationConnections at once: not a migration this host has room for
                    continue;
                }
                lock (perAddress)
                {
                    int open = perAddress.GetValueOrDefault(address);
                    if (open >= MaxMigrationConnectionsPerAddress)
                    {
                        connections.Release();
                        client.Dispose(); // this peer has its share of the slots already
                        continue;
                    }
                    perAddress[address] = open + 1;
                }
                _ = Task.Run(async () =>
                {
                    using (client)
                    using (Defer(() => connections.Release()))
                    using (Defer(() =>
                    {
                        lock (perAddress)
                        {
                            if (--perAddress[address] == 0)
                            {
                                perAddress.Remove(address);
                            }
                        }
                    }))
                    {
                        client.NoDelay = true;
                        try
                        {
                            await ReceiveMigrationAsync(client.GetStream(), client.Client.RemoteEndPoint?.ToString() ?? "?", ct);
                        }
                        catch (Exception e)
                        {
                            // ReceiveMigrationAsync has audited and cleaned up; never let one connection end the listener.
                            _ = e;
                        }
                    }
                }, CancellationToken.None);
            }
        }
        finally
        {
            listener.Stop();
        }
    }

    /// <summary>The destination side of one migration connection.</summary>
    public async Task ReceiveMigrationAsync(Stream stream, string from, CancellationToken ct)
    {
        await using var channel = new SecureChannel(stream);
        string name = "?", phase = "handshake";
        string? migrationId = null;
        byte[]? ks = null; // the source's share, from its opening in the TPM to the key schedule
        SemaphoreSlim? gate = null;
        bool created = false, started = false;
        var clock = Stopwatch.StartNew();
        try
        {
            // A source sends its key share as soon as it is connected: an idle peer is dropped after 10 s.
            var binding = await Step(c => channel.ProtectHandshakeAsync(initiator: false, MigrationKeys.Protocol, c), ct, HelloTimeout);
            var me = Host.CurrentCredential();
            await channel.SendHandshakeAsync(new JsonObject { ["type"] = "hello", ["protocol"] = MigrationKeys.Protocol, ["hostId"] = me.HostId, ["token"] = me.Token }, ct);

            // The peer is anyone until the Guardian says this migration is ours: only then is a share opened in the TPM.
            phase = "check";
            var challenge = SecureChannel.Expect(await Step(channel.ReceiveHandshakeAsync, ct), "challenge");
            migrationId = Text(challenge, "migrationId", 32);
            var label = MigrationKeys.DecryptLabel(migrationId, 's'); // refuses an id that is not 32 lowercase hex digits (migration.id)
            var wrappedKs = Base64(challenge, "wrappedShare");
            MigrationCheck check;
            try
            {
                check = await Host.CheckMigrationAsync(migrationId, me, ct);
            }
            catch (Guardian.GuardianException e)
            {
                throw new VmOperationException(e.Id, $"the Guardian does not know this migration for this host: {e.Message}", e);
            }
            if (check.Destination.HostId != me.HostId || check.MigrationId != migrationId)
            {
                throw new VmOperationException("vm.migrate.authorisation", "the Guardian's migration record names another host");
            }
            ks = await Host.DecryptShareAsync(wrappedKs, label, me, ct);
            await channel.SendHandshakeAsync(new JsonObject { ["type"] = "proof", ["proof"] = Convert.ToBase64String(MigrationKeys.DestinationProof(ks, binding, migrationId)) }, ct);

            phase = "accept";
            var offer = SecureChannel.Expect(await Step(channel.ReceiveHandshakeAsync, ct), "offer");
            name = CheckName(Text(offer, "vm", 63));
            var vmId = Text(offer, "vmId", 64);
            var kp = Text(offer, "keyProtector", 256 * 1024);
            if (vmId != check.VmId)
            {
                throw new VmOperationException("vm.migrate.authorisation", "the source offers another VM than the one the Guardian authorised");
            }
            // No lock yet: the Guardian has not accepted this migration, and holding the VM's name
            // before that would let a half-done migration delay real ones (vm.busy).
            if (Directory.Exists(BundleDir(name)))
            {
                throw new VmOperationException("vm.exists", $"a VM named {name} already exists on the destination");
            }
            MigrationAcceptance acc;
            try
            {
                acc = await Host.AcceptMigrationAsync(migrationId, kp, me, ct);
            }
            catch (Guardian.GuardianException e)
            {
                throw new VmOperationException(e.Id, $"the Guardian refused this host's acceptance: {e.Message}", e);
            }
            if (acc.Destination.HostId != me.HostId || acc.VmId != vmId || acc.MigrationId != migrationId)
            {
                throw new VmOperationException("vm.migrate.authorisation", "the Guardian's migration record names another host or VM");
            }
            // Authorised by the Guardian for this host: now the name is taken (or the migration refused).
            gate = _locks.GetOrAdd(name, _ => new SemaphoreSlim(1, 1));
            if (!await gate.WaitAsync(TimeSpan.Zero, ct))
            {
                gate = null;
                throw new VmOperationException("vm.busy", $"{name} is being changed on this host");
            }
            if (Directory.Exists(BundleDir(name)))
            {
                throw new VmOperationException("vm.exists", $"a VM named {name} already exists on the destination");
            }
            var vmk = await Host.UnwrapAsync(acc.Release, kp, me, ct);
            var vmkCopy = VmMasterKey.FromBytes(vmk.Bytes);
            try
            {
                using (vmk)
                {
                    var kd = RandomNumberGenerator.GetBytes(MigrationKeys.ShareLength);
                    try
                    {
                        var wrappedKd = MigrationKeys.WrapShare(MigrationKeys.PeerBindingKey(acc.Source), kd, migrationId, 'd');
                        using var keys = new MigrationKeys.Schedule(ks, kd, vmk, migrationId,
                            MigrationKeys.Transcript(migrationId, acc.VmId, acc.Source, acc.Destination, wrappedKs, wrappedKd, binding));
                        await channel.SendHandshakeAsync(new JsonObject
                        {
                            ["type"] = "accept", ["wrappedShare"] = Convert.ToBase64String(wrappedKd), ["confirm"] = Convert.ToBase64String(keys.Confirmation("destination")),
                        }, ct);
                        channel.Key(keys.DestinationToSource, keys.SourceToDestination);
                        var confirm = SecureChannel.Expect(await Step(channel.ReceiveControlAsync, ct), "confirm");
                        keys.CheckConfirmation("source", Base64(confirm, "confirm"));
                    }
                    finally
                    {
                        CryptographicOperations.ZeroMemory(kd);
                        CryptographicOperations.ZeroMemory(ks);
                    }
                }

                phase = "bundle";
                var list = SecureChannel.Expect(await Step(channel.ReceiveControlAsync, ct), "bundle");
                var files = IncomingFiles(list);
                var dir = BundleDir(name);
                SecureFiles.CreateDirectory(dir);
                created = true;
                foreach (var sub in new[] { VmBundle.DisksDir, VmBundle.VtpmDir, VmBundle.SnapshotsDir })
                {
                    SecureFiles.CreateDirectory(Path.Combine(dir, sub)); // empty folders are not in the file list
                }
                File.WriteAllBytes(Path.Combine(dir, IncomingMarker), []);
                var handles = OpenIncomingFiles(dir, files);
                try
                {
                    await MigrationRelay.ReceiveFilesAsync(channel, handles, "files-done", ct);
                }
                finally
                {
                    foreach (var h in handles)
                    {
                        h.Dispose();
                    }
                }
                var bundle = VmBundle.Load(dir);
                if (bundle.Config.VmId != acc.VmId || bundle.Config.Name != name || File.ReadAllText(Path.Combine(dir, VmBundle.KeyProtectorFile)) != kp)
                {
                    throw new VmOperationException("vm.migrate.bundle", "the bundle received is not the authorised VM's (id, name or key protector differ)");
                }
                bundle.CheckKey(vmkCopy);

                phase = "start";
                var incoming = new IncomingMigration();
                var copy = vmkCopy;
                vmkCopy = null;
                await StartAsync(name, null, incoming, ct, (_, _) => Task.FromResult((copy, acc.Release)), gateHeld: true);
                started = true;
                await channel.SendControlAsync(new JsonObject { ["type"] = "ready" }, ct);

                phase = "stream";
                var diskFiles = OpenIncomingFiles(dir, files, existing: true);
                long streamBytes;
                try
                {
                    streamBytes = await MigrationRelay.PumpInAsync(channel, incoming.Stream!, diskFiles, ct);
                }
                catch (IOException e) when (_running.TryGetValue(name, out var loading))
                {
                    throw new VmOperationException("vm.migrate.load", $"this host's QEMU stopped taking the stream ({e.Message}): {Tail(loading.Qemu.Output)}", e);
                }
                finally
                {
                    foreach (var h in diskFiles)
                    {
                        h.Dispose();
                    }
                }
                incoming.Connection!.Shutdown(SocketShutdown.Send);
                var running = _running[name];
                var status = await WaitForMigrationAsync(running.Qemu, TimeSpan.FromMinutes(5), ct);
                if (status != "completed")
                {
                    throw new VmOperationException("vm.migrate.load", $"this host's QEMU did not load the state (incoming migration '{status}')");
                }
                await channel.SendControlAsync(new JsonObject { ["type"] = "prepared" }, ct);

                phase = "commit";
                var commit = SecureChannel.Expect(await Step(channel.ReceiveControlAsync, ct), "commit");
                if (commit["resume"]?.GetValue<bool>() != false)
                {
                    await running.Qemu.Qmp.ExecuteAsync("cont", null, null, ct);
                }
                File.Delete(Path.Combine(dir, IncomingMarker));
                running.Note = null;
                _audit.Append("vm.migrated-in", name, new Dictionary<string, object?>
                {
                    ["migrationId"] = migrationId, ["from"] = acc.Source.HostId, ["releaseId"] = acc.Release.ReleaseId, ["guardianAuditSeq"] = acc.Release.AuditSeq,
                    ["streamBytes"] = streamBytes, ["pid"] = running.Qemu.Pid, ["ms"] = clock.ElapsedMilliseconds,
                });
                await channel.SendControlAsync(new JsonObject { ["type"] = "running" }, ct);
            }
            finally
            {
                vmkCopy?.Dispose();
            }
        }
        catch (Exception e)
        {
            var id = e switch
            {
                VmOperationException v => v.Id,
                MigrationChannelException c => c.Id,
                HostAgentException h => h.Id,
                Keys.ReleaseUnwrapException u => u.Id,
                KeyProtectorException k => "vm." + k.Id,
                VmBundleException b => b.Id,
                OperationCanceledException => "vm.migrate.timeout",
                _ => "vm.migrate.failed",
            };
            // These exceptions' messages name states, files and ids, never key material.
            await TellAsync(channel, id, e is VmOperationException or MigrationChannelException or VmBundleException or HostAgentException
                or Keys.ReleaseUnwrapException or KeyProtectorException ? $"{phase}: {e.Message}" : $"{phase}: {e.GetType().Name}");
            if (started && _running.ContainsKey(name))
            {
                try
                {
                    await StopAsync(name, force: true, TimeSpan.Zero, CancellationToken.None);
                }
                catch (VmOperationException)
                {
                }
            }
            if (created)
            {
                TryDelete(BundleDir(name)); // never committed: the VM lives on at the source
            }
            _audit.Append("vm.migrate-in.failed", name, new Dictionary<string, object?>
            {
                ["migrationId"] = migrationId, ["from"] = from, ["phase"] = phase, ["reason"] = id, ["detail"] = $"{e.GetType().Name}: {Tail(e.Message)}",
            });
            throw;
        }
        finally
        {
            if (ks is not null)
            {
                CryptographicOperations.ZeroMemory(ks);
            }
            gate?.Release();
        }
    }

    /// <summary>A bundle whose migration has not been committed carries this file; an agent start removes such bundles unless their VM runs.</summary>
    public const string IncomingMarker = ".incoming";

    /// <summary>The bundle holds a migration copy marked before this agent started (so never committed by it).</summary>
    private bool IsUncommittedIncoming(string name, DateTime agentStart)
    {
        var marker = Path.Combine(_o.VmsDir, name, IncomingMarker);
        return File.Exists(marker) && File.GetLastWriteTimeUtc(marker) < agentStart;
    }

    /// <summary>
    /// After an agent restart: a bundle still marked <see cref="IncomingMarker"/> (from before this
    /// start) belongs to a migration this agent never finished. If its QEMU runs the guest, the
    /// commit had come (the agent stopped before removing the mark): keep it. Otherwise the source
    /// kept or resumed the VM: this copy is killed and removed, so the guest never runs twice.
    /// </summary>
    private async Task AbandonUncommittedMigrationsAsync(DateTime agentStart)
    {
        foreach (var dir in Directory.EnumerateDirectories(_o.VmsDir))
        {
            var name = Path.GetFileName(dir);
            if (!IsUncommittedIncoming(name, agentStart))
            {
                continue;
            }
            if (_running.TryGetValue(name, out var vm) && await QueryStatusAsync(vm) == "running")
            {
                File.Delete(Path.Combine(dir, IncomingMarker));
                _audit.Append("vm.migrate-in.kept", name, new Dictionary<string, object?> { ["reason"] = "the guest was running: the commit had come" });
                continue;
            }
            if (_running.ContainsKey(name))
            {
                try
                {
                    await StopAsync(name, force: true, TimeSpan.Zero, CancellationToken.None);
                }
                catch (VmOperationException)
                {
                }
            }
            TryDelete(dir);
            _audit.Append("vm.migrate-in.abandoned", name, new Dictionary<string, object?> { ["reason"] = "a migration into this host was never committed" });
        }
    }

    /// <summary>The destination's QEMU: it listens for the stream; the agent connects and hands the socket to the pump.</summary>
    private sealed class IncomingMigration : IIncoming
    {
        public bool Resume => false;

        public Socket? Connection { get; private set; }

        public NetworkStream? Stream { get; private set; }

        public Task PrepareAsync(VmBundle bundle, VmMasterKey vmk, IProgress<string>? progress, CancellationToken ct) => Task.CompletedTask;

        public async Task FeedAsync(QemuProcess qemu, IProgress<string>? progress, CancellationToken ct)
        {
            var socket = Path.Combine(Path.GetDirectoryName(qemu.QmpSocket)!, IncomingSocketName);
            Connection = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await Connection.ConnectAsync(new UnixDomainSocketEndPoint(socket), ct);
            RequirePeer(Connection, qemu.Pid);
            Stream = new NetworkStream(Connection, ownsSocket: true);
        }
    }

    /// <summary>
    /// Sends a file as File records of up to 1 MiB, skipping all-zero pieces (the receiver's file
    /// starts sparse at the right size) — or, with <paramref name="previous"/>, only the pieces whose
    /// SHA-256 changed since (zero pieces included then). Answers bytes sent and, with
    /// <paramref name="keepHashes"/>, each piece's hash (null for a zero piece).
    /// </summary>
    private static async Task<(long Bytes, byte[]?[]? Hashes)> SendFileAsync(SecureChannel channel, int index, string path, byte[]?[]? previous, bool keepHashes, CancellationToken ct)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        long length = RandomAccess.GetLength(handle);
        var pieces = (int)((length + ChunkSize - 1) / ChunkSize);
        var hashes = keepHashes ? new byte[]?[pieces] : null;
        var record = new byte[10 + ChunkSize];
        long sent = 0;
        BinaryPrimitives.WriteUInt16BigEndian(record, (ushort)index);
        BinaryPrimitives.WriteUInt64BigEndian(record.AsSpan(2), (ulong)length);
        await channel.SendAsync(FrameType.File, record.AsMemory(0, 10), ct); // the size first
        for (int p = 0; p < pieces; p++)
        {
            long offset = (long)p * ChunkSize;
            int n = RandomAccess.Read(handle, record.AsSpan(10, (int)Math.Min(ChunkSize, length - offset)), offset);
            var data = record.AsSpan(10, n);
            bool zero = !data.ContainsAnyExcept((byte)0);
            var hash = zero || (hashes is null && previous is null) ? null : SHA256.HashData(data);
            if (hashes is not null)
            {
                hashes[p] = hash;
            }
            bool send = previous is null
                ? !zero
                : p >= previous.Length || !(hash is null ? previous[p] is null : previous[p] is { } h && h.AsSpan().SequenceEqual(hash));
            if (send && n > 0)
            {
                BinaryPrimitives.WriteUInt64BigEndian(record.AsSpan(2), (ulong)offset);
                await channel.SendAsync(FrameType.File, record.AsMemory(0, 10 + n), ct);
                sent += n;
            }
        }
        return (sent, hashes);
    }

    /// <summary>Every regular file of a bundle, relative paths ('/' separated), partial ones ('.'-prefixed) left out.</summary>
    private static List<(string Path, long Size)> BundleFiles(string dir) =>
        [.. Directory.EnumerateFiles(dir, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 })
            .Select(f => Path.GetRelativePath(dir, f).Replace(Path.DirectorySeparatorChar, '/'))
            .Where(r => !r.Split('/').Any(part => part.StartsWith('.')))
            .Order(StringComparer.Ordinal)
            .Select(r => (r, new FileInfo(Path.Combine(dir, r)).Length))];

    /// <summary>The announced files, checked: relative, under the bundle's known folders, no '..', no hidden parts, at most 4096 of them.</summary>
    private static List<(string Path, long Size)> IncomingFiles(JsonObject list)
    {
        if (list["files"] is not JsonArray array || array.Count is 0 or > 4096)
        {
            throw new MigrationChannelException("migration.bundle.files", "the bundle announces no files, or more than 4096");
        }
        var files = new List<(string, long)>();
        foreach (var item in array)
        {
            var path = item?["path"]?.GetValue<string>() ?? "";
            var size = item?["size"]?.GetValue<long>() ?? -1;
            if (!IsBundleFile(path, size))
            {
                throw new MigrationChannelException("migration.bundle.path", $"the bundle announces '{SecureChannel.Printable(path, 120)}' ({size} bytes): not a bundle file");
            }
            files.Add((path, size));
        }
        if (files.Select(f => f.Item1).Distinct(StringComparer.Ordinal).Count() != files.Count)
        {
            throw new MigrationChannelException("migration.bundle.path", "the bundle announces a file twice");
        }
        return files;
    }

    /// <summary>A relative path a bundle may hold: one of its files at the top, or under disks/, vtpm/, snapshots/; no '..', hidden or empty parts, no control characters.</summary>
    internal static bool IsBundleFile(string path, long size)
    {
        var parts = path.Split('/');
        bool known = parts.Length == 1 ? path is VmBundle.ConfigFile or VmBundle.KeyProtectorFile or VmBundle.NvramFile
            : parts[0] is VmBundle.DisksDir or VmBundle.VtpmDir or VmBundle.SnapshotsDir;
        return known && size >= 0 && size <= MigrationRelay.MaxFileSize && path.Length <= 1024
            && !parts.Any(p => p.Length == 0 || p.StartsWith('.') || p.Length > 255 || p.Any(c => char.IsControl(c) || c == '\\'));
    }

    private static List<MigrationRelay.IncomingFile> OpenIncomingFiles(string dir, List<(string Path, long Size)> files, bool existing = false)
    {
        var handles = new List<MigrationRelay.IncomingFile>();
        foreach (var (path, size) in files)
        {
            var full = Path.Combine(dir, path);
            if (!existing)
            {
                var parent = Path.GetDirectoryName(full)!;
                foreach (var d in Ancestors(dir, parent))
                {
                    SecureFiles.CreateDirectory(d);
                }
            }
            var options = new FileStreamOptions { Mode = existing ? FileMode.Open : FileMode.CreateNew, Access = FileAccess.ReadWrite, Share = FileShare.ReadWrite };
            if (!existing)
            {
                options.UnixCreateMode = SecureFiles.FileMode;
            }
            var fs = new FileStream(full, options);
            if (!existing)
            {
                fs.SetLength(size);
            }
            handles.Add(new MigrationRelay.IncomingFile(path, size, fs));
        }
        return handles;
    }

    private static IEnumerable<string> Ancestors(string root, string dir)
    {
        var stack = new Stack<string>();
        for (var d = dir; d.Length > root.Length; d = Path.GetDirectoryName(d)!)
        {
            stack.Push(d);
        }
        return stack;
    }

    private static async Task TellAsync(SecureChannel channel, string id, string message)
    {
        try
        {
            var error = new JsonObject { ["type"] = "error", ["id"] = id, ["message"] = message };
            using var quick = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            if (channel.Keyed)
            {
                await channel.SendControlAsync(error, quick.Token);
            }
            else
            {
                await channel.SendHandshakeAsync(error, quick.Token);
            }
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException or InvalidOperationException or SocketException)
        {
            // the other side is gone; the audit log says what happened
        }
    }

    private async Task ReportAsync(HostCredential me, string migrationId, string outcome, string? reason)
    {
        try
        {
            await Host.CompleteMigrationAsync(migrationId, outcome, reason, me, CancellationToken.None);
        }
        catch (Exception e) when (e is Guardian.GuardianException or HttpRequestException or TaskCanceledException)
        {
            _audit.Append("vm.migrate.report-failed", "agent", new Dictionary<string, object?> { ["migrationId"] = migrationId, ["reason"] = e.Message });
        }
    }

    private static async Task WaitForMigrationEndAsync(QemuProcess qemu)
    {
        try
        {
            await WaitForMigrationAsync(qemu, TimeSpan.FromSeconds(30), CancellationToken.None);
        }
        catch (Exception e) when (e is QmpProtocolException or QmpException or IOException or ObjectDisposedException)
        {
        }
    }

    private static async Task<string?> QueryStatusAsync(RunningVm vm)
    {
        try
        {
            return (await vm.Qemu.Qmp.ExecuteAsync("query-status", null, null, CancellationToken.None))?["status"]?.GetValue<string>();
        }
        catch (Exception e) when (e is QmpProtocolException or QmpException or IOException or ObjectDisposedException or TimeoutException)
        {
            return null;
        }
    }

    private static CancellationTokenSource Deadline(CancellationToken ct, TimeSpan after)
    {
        var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(after);
        return cts;
    }

    /// <summary>Connections the migration listener serves at once, handshakes included; more are closed at once.</summary>
    public const int MaxMigrationConnections = 8;

    /// <summary>Of those, from one address at once: a single peer that stalls cannot take every slot (a host evacuating may still move 4 VMs at once).</summary>
    public const int MaxMigrationConnectionsPerAddress = 4;

    private static readonly TimeSpan HelloTimeout = TimeSpan.FromSeconds(10);

    private sealed class Deferred(Action action) : IDisposable
    {
        public void Dispose() => action();
    }

    private static IDisposable Defer(Action action) => new Deferred(action);

    /// <summary>One protocol step with its own time limit (a silent peer never holds a migration forever).</summary>
    private static Task<T> Step<T>(Func<CancellationToken, Task<T>> receive, CancellationToken ct, TimeSpan? limit = null) =>
        MigrationRelay.WithLimit(receive, ct, limit ?? StepTimeout);

    private static string Tail(string s) => s.Length <= 400 ? s : "…" + s[^400..];

    private static string Text(JsonObject o, string key, int max)
    {
        var v = o[key] is JsonValue j && j.TryGetValue<string>(out var s) ? s : null;
        return v is { Length: > 0 } && v.Length <= max
            ? v
            : throw new MigrationChannelException("migration.channel.message", $"'{key}' is missing, not text, or longer than {max}");
    }

    private static byte[] Base64(JsonObject o, string key)
    {
        try
        {
            return Convert.FromBase64String(Text(o, key, 64 * 1024));
        }
        catch (FormatException)
        {
            throw new MigrationChannelException("migration.channel.message", $"'{key}' is not base64");
        }
    }
}

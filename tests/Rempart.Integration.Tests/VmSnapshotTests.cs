using System.Text;
using System.Text.Json.Nodes;
using Rempart.AgentService;
using Rempart.Host.Agent;
using Rempart.Host.Snapshots;
using Rempart.Host.Vm;
using Rempart.Integration.Tests.Ops;
using Rempart.KeyProtection;
using Rempart.Tpm;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Tests.Infrastructure;
using Rempart.Tpm.Transport;
using Xunit.Abstractions;
using static Rempart.Integration.Tests.VmTestDisks;

namespace Rempart.Integration.Tests;

/// <summary>
/// Snapshots of a running shielded VM end to end (issue 7 §1), through the CLI: one boot of the test
/// guest in stay mode (it counts in RAM and writes the count to its encrypted marker disk every
/// second), a snapshot, tampered and truncated copies refused before anything starts, then a restore
/// after which the guest counts on from the snapshot's value with the snapshot's vTPM. Real QEMU,
/// swtpm and Guardian; fails when a tool is missing.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class VmSnapshotTests(ITestOutputHelper output)
{
    private const uint AfterSnapshotIndex = 0x01500077;

    [Fact(Timeout = 1_200_000)]
    public async Task A_running_vm_is_snapshotted_sealed_and_restored_with_its_memory_disks_and_vtpm_and_a_tampered_snapshot_starts_nothing()
    {
        foreach (var tool in new[] { "qemu-system-x86_64", "qemu-img", "swtpm", "swtpm_setup", "setpriv", "setsid", "prlimit", "chown", "cp" })
        {
            Tool.Which(tool);
        }
        Tool.Run("bash", [Path.Combine(OpsSupport.RepoRoot, "scripts", "build-test-guest.sh")], timeoutMs: 900_000).Ok();
        var guests = Path.Combine(OpsSupport.RepoRoot, "artifacts", "test-guest");
        var markerText = File.ReadAllText(Path.Combine(guests, "marker.txt")).Trim();

        await using var g = await GuardianFixture.StartAsync();
        await g.CreateGroupAsync("prod");
        using var host = new SwtpmHost();
        var dir = Directory.CreateTempSubdirectory("rempart-vm-snap-").FullName;
        File.SetUnixFileMode(dir, VmManager.Traversable);
        var log = Path.Combine(dir, "boot.log");
        await File.WriteAllBytesAsync(log, host.EventLog);
        var socket = Path.Combine(dir, "agent", "agent.sock");
        var data = Path.Combine(dir, "data");
        var app = AgentServer.Build(new HostAgentOptions(g.Url, null, host.Tpm.Address, data, log, "hv-snap", TimeSpan.FromSeconds(2)),
            socket, VmHostOptions.Under(data, Path.Combine(dir, "run")));
        await app.StartAsync();
        var env = new Dictionary<string, string> { ["REMPART_AGENT_SOCKET"] = socket };
        Tool.Result Cli(params string[] args) => Tool.Run(Path.Combine(OpsSupport.RepoRoot, "scripts", "rempart"), args, env, timeoutMs: 600_000);
        // Operations that need a release: on a loaded machine the 2-second attestation period can leave the host between tokens for a moment.
        Tool.Result Released(params string[] args)
        {
            for (int attempt = 0; ; attempt++)
            {
                var r = Cli(args);
                if (!r.Stderr.Contains("agent.no-token", StringComparison.Ordinal) || attempt == 10)
                {
                    return r;
                }
                Thread.Sleep(2000);
            }
        }
        var pids = new List<int>();
        var clearCopies = new List<string>(); // the VM's clear variable stores in /dev/shm, one per run
        string ClearCopy() => JsonNode.Parse(File.ReadAllText(Path.Combine(data, "vm-state", "snap.json")))!["NvramCopy"]!.GetValue<string>();
        try
        {
            using var agent = AgentSocket.Client(socket);
            async Task<JsonNode> Status() => JsonNode.Parse(await agent.GetStringAsync("v1/status"))!;
            await OpsSupport.EventuallyAsync(async () => (await Status())["state"]?.GetValue<string>() == "pending", "the agent enrols", 60_000);
            await g.ApproveAsync((await Status())["hostId"]!.GetValue<string>(), "prod");
            await OpsSupport.EventuallyAsync(async () => (await Status())["state"]?.GetValue<string>() == "affirming", "the agent attests", 60_000);

            var metadata = GuardianMetadata.Parse(await g.Http.GetStringAsync("v1/guardian/metadata"));
            using var owner = OwnerKey.Generate();
            var (kp, vmk) = KeyProtector.Create("vm-snap-1", new ReleasePolicy(ShieldingLevel.Shielded, ["prod"]), owner.PublicKey, [metadata]);
            using var _vmk = vmk;
            var kpFile = Path.Combine(dir, "vm.kp");
            await File.WriteAllTextAsync(kpFile, kp.ToJson());
            var marker = Path.Combine(dir, "marker.img");
            File.Copy(Path.Combine(guests, "marker.img"), marker);
            await using (var f = new FileStream(marker, FileMode.Open, FileAccess.Write))
            {
                await f.WriteAsync(Encoding.ASCII.GetBytes($"REMPART-MARKER {markerText}\nREMPART-MODE stay\n"));
            }
            Assert.Equal(0, Cli("vm", "create", "snap", "--from", Path.Combine(guests, "guest.img"), "--kp", kpFile, "--memory", "512", "--disk", $"marker={marker}").ExitCode);
            var bundle = Path.Combine(data, "vms", "snap");
            var markerDisk = Path.Combine(bundle, "disks", "marker.qcow2");
            int TickOf(string disk) => Tick(ReadRegion(disk, vmk, "marker", Path.Combine(dir, "peek.raw"), 512 * 1024, 64));

            // A stopped VM has no memory to capture.
            var notRunning = Cli("vm", "snapshot", "snap");
            Assert.Equal(1, notRunning.ExitCode);
            Assert.Contains("vm.not-running", notRunning.Stderr);

            var started = Released("vm", "start", "snap", "--format", "json");
            Assert.True(started.ExitCode == 0, started.Stdout + started.Stderr);
            pids.Add(JsonNode.Parse(started.Stdout)!["pid"]!.GetValue<int>());
            clearCopies.Add(ClearCopy());
            await OpsSupport.EventuallyAsync(() => Task.FromResult(TickOf(markerDisk) >= 3), "the guest counts (stay mode)", 600_000);

            // The snapshot: the guest pauses, its state is sealed, it runs on.
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var taken = Released("vm", "snapshot", "snap", "--name", "s1", "--format", "json");
            Assert.True(taken.ExitCode == 0, taken.Stdout + taken.Stderr);
            output.WriteLine($"snapshot in {clock.ElapsedMilliseconds} ms (CLI included):\n{taken.Stderr}");
            var snap = JsonNode.Parse(taken.Stdout)!;
            var snapDir = Path.Combine(bundle, "snapshots", "s1");
            var sealedFile = Path.Combine(snapDir, "state.sealed");
            Assert.Equal(snap["fingerprint"]!.GetValue<string>(), JsonNode.Parse(File.ReadAllText(Path.Combine(snapDir, "snapshot.json")))!["fingerprint"]!.GetValue<string>());
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(snapDir));
            foreach (var f in Directory.EnumerateFiles(snapDir, "*", SearchOption.AllDirectories))
            {
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(f));
            }
            Assert.Equal(new FileInfo(sealedFile).Length, snap["sealedBytes"]!.GetValue<long>());
            var atSnapshot = TickOf(Path.Combine(snapDir, "disks", "marker.qcow2"));
            Assert.True(atSnapshot >= 3, $"the snapshot's disk says tick {atSnapshot}");
            Assert.Equal("running", JsonNode.Parse(Cli("vm", "status", "snap", "--format", "json").Ok().Stdout)!["state"]!.GetValue<string>());
            await OpsSupport.EventuallyAsync(() => Task.FromResult(TickOf(markerDisk) > atSnapshot + 2), "the guest runs on after the snapshot", 120_000);

            // Nothing of the guest's RAM in clear: the marker (in /tmp/marker-in-ram) is in the stream, sealed.
            AssertNowhere(snapDir, Encoding.ASCII.GetBytes(markerText), "the marker text");
            using (var key = SnapshotKey.Derive(vmk, "vm-snap-1", "s1"))
            await using (var file = File.OpenRead(sealedFile))
            {
                var plain = new MemoryStream();
                var opened = await SnapshotStream.OpenAsync(file, key, plain);
                Assert.Equal(snap["stateBytes"]!.GetValue<long>(), opened.PlaintextLength);
                Assert.True(Contains(plain.GetBuffer().AsSpan(0, (int)plain.Length).ToArray(), Encoding.ASCII.GetBytes(markerText)),
                    "the check above could not fail: the marker is not in the decrypted migration stream");
                Assert.True(Contains(plain.GetBuffer().AsSpan(0, (int)plain.Length).ToArray(), Encoding.ASCII.GetBytes("tpm-emulator")),
                    "the vTPM's state is not in the migration stream");
            }

            var stopped = Cli("vm", "kill", "snap"); // the test guest ignores the ACPI button: stop would end in QMP quit anyway
            Assert.True(stopped.ExitCode == 0, stopped.Stdout + stopped.Stderr);
            var atStop = TickOf(markerDisk);
            Assert.True(atStop > atSnapshot + 2, $"{atStop} vs {atSnapshot}");
            // A write after the snapshot where the guest never writes (256 KiB): the restore must take it away.
            // (The tick cannot show this: the restored guest writes its next tick within a second of resuming.)
            var pass = Encoding.ASCII.GetString(EncryptedDisk.Passphrase(vmk, "marker"));
            Tool.Run("qemu-io", ["--object", EncryptedDisk.SecretObject(), "--image-opts", EncryptedDisk.ImageOpts(markerDisk), "-c", "write -P 0x52 262144 4096"], stdin: pass).Ok();
            Assert.Equal(new string('R', 16), ReadRegion(markerDisk, vmk, "marker", Path.Combine(dir, "peek.raw"), 262144, 16));

            // After the snapshot, the vTPM gets an NV index (offline, with the VM's key): the restore must not have it.
            using (var v = VtpmProcess.Start(Path.Combine(bundle, "vtpm"), vmk, Path.Combine(dir, "tpm1"), dataSocket: true))
            using (var tpm = new TpmClient(SwtpmTransport.ConnectUnix(v.DataSocket!)))
            {
                tpm.NvDefineSpace(TpmHandle.Owner, [], new TpmsNvPublic(AfterSnapshotIndex, TpmAlgId.Sha256, TpmaNv.OwnerWrite | TpmaNv.OwnerRead | TpmaNv.NoDa, [], 8));
                tpm.NvWrite(TpmHandle.Owner, AfterSnapshotIndex, Encoding.ASCII.GetBytes("after-s1"));
                tpm.Shutdown();
            }
            Tool.Run("chown", ["-R", "0:0", Path.Combine(bundle, "vtpm")]).Ok();

            // Tampered and truncated snapshots: refused after the release, before anything starts or changes.
            var original = await File.ReadAllBytesAsync(sealedFile);
            var flipped = (byte[])original.Clone();
            flipped[original.Length / 2] ^= 0x01;
            foreach (var (bad, id) in new[] { (flipped, "snapshot.tampered"), (original[..^10], "snapshot.truncated") })
            {
                await File.WriteAllBytesAsync(sealedFile, bad);
                var refused = Released("vm", "restore", "snap", "s1");
                output.WriteLine(refused.Stderr);
                Assert.Equal(1, refused.ExitCode);
                Assert.Contains(id, refused.Stderr);
                Assert.False(File.Exists(Path.Combine(data, "vm-state", "snap.json")));
                Assert.False(Directory.Exists(Path.Combine(dir, "run", "snap")));
                Assert.Equal("stopped", JsonNode.Parse(Cli("vm", "status", "snap", "--format", "json").Ok().Stdout)!["state"]!.GetValue<string>());
                Assert.Equal(atStop, TickOf(markerDisk)); // the disk was not put back
            }
            await File.WriteAllBytesAsync(sealedFile, original);
            File.SetUnixFileMode(sealedFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);

            // The restore: the guest resumes its count from the snapshot (a fresh boot would need ~20 s and start at 1).
            clock.Restart();
            var restored = Released("vm", "restore", "snap", "s1", "--format", "json");
            Assert.True(restored.ExitCode == 0, restored.Stdout + restored.Stderr);
            output.WriteLine($"restore in {clock.ElapsedMilliseconds} ms (CLI included):\n{restored.Stderr}");
            var rs = JsonNode.Parse(restored.Stdout)!;
            Assert.Equal("running", rs["state"]!.GetValue<string>());
            pids.Add(rs["pid"]!.GetValue<int>());
            clearCopies.Add(ClearCopy());
            clock.Restart();
            Assert.Equal("", ReadRegion(markerDisk, vmk, "marker", Path.Combine(dir, "peek.raw"), 262144, 16)); // the disk is the snapshot's
            int resumed = 0;
            await OpsSupport.EventuallyAsync(() =>
            {
                resumed = TickOf(markerDisk);
                return Task.FromResult(resumed != atSnapshot);
            }, "the restored guest counts again", 60_000);
            output.WriteLine($"tick {atSnapshot} at the snapshot, {atStop} at stop, {resumed} {clock.ElapsedMilliseconds} ms after the restore");
            Assert.True(resumed > atSnapshot && resumed <= atSnapshot + 15, $"the guest counts from {resumed}, the snapshot had {atSnapshot}");
            Assert.True(clock.ElapsedMilliseconds < 15_000, "the guest took as long as a boot to count again");

            var stopped2 = Cli("vm", "kill", "snap");
            Assert.True(stopped2.ExitCode == 0, stopped2.Stdout + stopped2.Stderr);

            // The vTPM is the snapshot's: the index defined after it is gone, the EK certificate is there.
            using (var v = VtpmProcess.Start(Path.Combine(bundle, "vtpm"), vmk, Path.Combine(dir, "tpm2"), dataSocket: true))
            using (var tpm = new TpmClient(SwtpmTransport.ConnectUnix(v.DataSocket!)))
            {
                Assert.ThrowsAny<TpmException>(() => tpm.NvReadPublic(AfterSnapshotIndex));
                Assert.NotNull(tpm.ReadEkCertificate());
            }
            Tool.Run("chown", ["-R", "0:0", Path.Combine(bundle, "vtpm")]).Ok();

            // list, delete, audit.
            var list = JsonNode.Parse(Cli("vm", "snapshot", "list", "snap", "--format", "json").Ok().Stdout)!.AsArray();
            Assert.Equal(["s1"], list.Select(s => s!["id"]!.GetValue<string>()));
            Assert.Equal(1, Cli("vm", "snapshot", "snap", "--name", "s1").ExitCode); // names are not reused
            Assert.Equal(0, Cli("vm", "snapshot", "delete", "snap", "s1").ExitCode);
            Assert.Empty(JsonNode.Parse(Cli("vm", "snapshot", "list", "snap", "--format", "json").Ok().Stdout)!.AsArray());
            Assert.False(Directory.Exists(snapDir));
            var events = JsonNode.Parse(Cli("host", "audit", "--format", "json").Ok().Stdout)!["records"]!.AsArray().Select(r => r!["event"]!.GetValue<string>()).ToList();
            foreach (var e in new[] { "vm.snapshot.taken", "vm.restore.refused", "vm.restored", "vm.snapshot.deleted" })
            {
                Assert.Contains(e, events);
            }
            Assert.All(clearCopies, c => Assert.False(File.Exists(c) || Directory.Exists(Path.GetDirectoryName(c)), $"{c} is left behind"));
        }
        finally
        {
            foreach (var pid in pids.Where(Alive))
            {
                System.Diagnostics.Process.GetProcessById(pid).Kill();
            }
            await app.StopAsync();
            await app.DisposeAsync();
            Directory.Delete(dir, true);
        }
    }
}

using System.Text;
using System.Text.Json.Nodes;
using Rempart.Integration.Tests.Ops;
using Rempart.KeyProtection;
using Rempart.Tpm;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Transport;
using Rempart.Tpm.Tests.Infrastructure;
using Xunit.Abstractions;
using static Rempart.Integration.Tests.VmTestDisks;

namespace Rempart.Integration.Tests;

/// <summary>
/// Live migration end to end (issue 7 §2): two hosts on this machine, each in its own network
/// namespace with its own swtpm host TPM and agent process, joined by a veth pair, one Guardian.
/// One boot of the test guest in stay mode (it counts in RAM, keeps the marker in RAM and writes
/// both to its encrypted marker disk every second). A → B with dumpcap on the veth: the guest
/// counts on at B from where it was and still holds the marker; the whole capture never shows the
/// marker. B → A with A's agent killed mid-migration: the guest runs on at B, and A's restarted
/// agent removes the half-received copy. A snapshot taken at B, the bundle exported, imported at A
/// and restored there: the guest counts on from the snapshot (issue 7 §1, restore on another host).
/// A → B through an active middle that runs the key exchange with each side: A refuses B's proof
/// (made on the middle's other connection) and the middle never reads which VM was to move.
/// A → B once B's PCRs changed: refused, the guest runs on at A. Fails when a tool is missing.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class VmMigrationTests(ITestOutputHelper output)
{
    [Fact(Timeout = 1_800_000)]
    public async Task A_running_vm_moves_live_over_an_encrypted_channel_and_a_refused_or_broken_migration_leaves_it_running()
    {
        foreach (var tool in new[] { "qemu-system-x86_64", "qemu-img", "swtpm", "swtpm_setup", "dumpcap", "tshark", "ip" })
        {
            Tool.Which(tool);
        }
        await using var h = await TwoHostHarness.StartAsync("prod", log: output.WriteLine);
        var (a, b) = (h.A, h.B);
        var markerText = VmHostHarness.MarkerText;
        var metadata = GuardianMetadata.Parse(await h.Guardian.Http.GetStringAsync("v1/guardian/metadata"));
        using var owner = OwnerKey.Generate();
        var (kp, vmk) = KeyProtector.Create("vm-mig-1", new ReleasePolicy(ShieldingLevel.Shielded, ["prod"]), owner.PublicKey, [metadata]);
        using var _vmk = vmk;
        var kpFile = Path.Combine(a.Dir, "vm.kp");
        await File.WriteAllTextAsync(kpFile, kp.ToJson());
        var marker = Path.Combine(a.Dir, "marker.img");
        File.Copy(Path.Combine(VmHostHarness.Guests, "marker.img"), marker);
        await using (var f = new FileStream(marker, FileMode.Open, FileAccess.Write))
        {
            await f.WriteAsync(Encoding.ASCII.GetBytes($"REMPART-MARKER {markerText}\nREMPART-MODE stay\n"));
        }
        string Region(AgentHost host) => ReadRegion(Path.Combine(host.DataDir, "vms", "mig", "disks", "marker.qcow2"), vmk, "marker",
            Path.Combine(host.Dir, "peek.raw"), 512 * 1024, 128);
        // Operations that need a release: with a 2-second attestation period a host can be between tokens for a moment.
        Tool.Result Released(AgentHost host, params string[] args)
        {
            for (int attempt = 0; ; attempt++)
            {
                var r = host.Cli(args);
                if (!r.Stderr.Contains("agent.no-token", StringComparison.Ordinal) || attempt == 10)
                {
                    return r;
                }
                Thread.Sleep(2000);
            }
        }
        string State(AgentHost host) => JsonNode.Parse(host.Cli("vm", "status", "mig", "--format", "json").Ok().Stdout)!["state"]!.GetValue<string>();

        Released(a, "vm", "create", "mig", "--from", Path.Combine(VmHostHarness.Guests, "guest.img"), "--kp", kpFile, "--memory", "256", "--disk", $"marker={marker}").Ok();
        Released(a, "vm", "start", "mig").Ok();
        await OpsSupport.EventuallyAsync(() => Task.FromResult(Tick(Region(a)) >= 3), "the guest counts at A (stay mode)", 600_000);

        // --- A → B, the whole migration link captured ----------------------------------------------
        var pcap = Path.Combine(h.A.Dir, "migration.pcap");
        var capture = await PacketCapture.StartAsync(h.Network.NamespaceA, HostNetwork.MigrationInterface, pcap);
        var before = Tick(Region(a));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var moved = Released(a, "vm", "migrate", "mig", "--to", b.MigrationAddress, "--format", "json");
        output.WriteLine(moved.Stderr);
        Assert.True(moved.ExitCode == 0, moved.Stdout + moved.Stderr + a.Output() + b.Output());
        var m = JsonNode.Parse(moved.Stdout)!;
        var result = await capture.StopAsync();
        output.WriteLine($"migration in {clock.ElapsedMilliseconds} ms (CLI included): {m.ToJsonString()}; capture {result.Statistics.Line}");
        Assert.Equal(b.HostId, m["destinationHost"]!.GetValue<string>());
        // The guest runs at B from where it was, with the marker still in its RAM; A keeps nothing.
        Assert.Equal("running", State(b));
        Assert.False(Directory.Exists(Path.Combine(a.DataDir, "vms", "mig")));
        Assert.Contains("vm.not-found", a.Cli("vm", "status", "mig").Stderr);
        // A rebooted guest would need ~20 s of firmware and kernel before its first tick, and would count from 1.
        var sinceMove = System.Diagnostics.Stopwatch.StartNew();
        string afterRegion = "";
        await OpsSupport.EventuallyAsync(() =>
        {
            afterRegion = Region(b);
            return Task.FromResult(Tick(afterRegion) > before);
        }, "the guest counts at B", 60_000);
        var first = Tick(afterRegion);
        output.WriteLine($"tick {before} before the migration, {first} at B {sinceMove.ElapsedMilliseconds} ms after it returned ({clock.ElapsedMilliseconds} ms after it started)");
        Assert.True(sinceMove.ElapsedMilliseconds < 15_000, "the guest took as long as a boot to count again at B");
        Assert.True(first <= before + 5 + (int)(clock.ElapsedMilliseconds / 1000), $"the guest counts from {first}, it was at {before}");
        Assert.Equal(markerText, TickMarker(afterRegion));

        // The capture, analysed after the timing-sensitive checks above (tshark reassembles every byte of it: minutes on a loaded machine).
        Assert.Equal(0, result.Dropped);
        // The capture holds the whole migration: the clear key shares (a positive control on this very capture) and at least every byte the agents sealed.
        Assert.True(result.Contains(Encoding.ASCII.GetBytes(Rempart.Host.Migration.MigrationKeys.Protocol)), "the capture does not show this migration's key shares");
        Assert.True(result.TcpPayloadBytes >= m["streamBytes"]!.GetValue<long>() + m["fileBytes"]!.GetValue<long>(),
            $"{result.TcpPayloadBytes} bytes captured, {m["streamBytes"]} + {m["fileBytes"]} sent");
        Assert.False(result.Contains(Encoding.ASCII.GetBytes(markerText)), "the guest's RAM marker crossed the wire in clear");
        Assert.False(result.Contains(Encoding.ASCII.GetBytes("REMPART-TICK")), "the guest's disk content crossed the wire in clear");
        Assert.False(result.Contains(Encoding.ASCII.GetBytes("tpm-emulator")), "QEMU's device state crossed the wire in clear");
        // The handshake after the key shares is sealed too: no host id, migration id or health token in clear.
        Assert.False(result.Contains(Encoding.ASCII.GetBytes(b.HostId)), "the destination's host id crossed the wire in clear");
        Assert.False(result.Contains(Encoding.ASCII.GetBytes(m["migrationId"]!.GetValue<string>())), "the migration id crossed the wire in clear");
        Assert.False(result.Contains(Encoding.ASCII.GetBytes("\"token\"")), "a health token crossed the wire in clear");

        // The audit: the Guardian authorised, released to each end, saw it accepted and completed; each agent logged its half.
        var audit = JsonNode.Parse(await h.Guardian.Admin.GetStringAsync("v1/audit?max=1000"))!["records"]!.AsArray();
        var mid = m["migrationId"]!.GetValue<string>();
        bool Has(string kind) => audit.Any(r => r!["kind"]!.GetValue<string>() == kind && r.ToJsonString().Contains(mid, StringComparison.Ordinal));
        Assert.True(Has("vm.migration-authorised") && Has("vm.migration-accepted") && Has("vm.migration-completed"), "Guardian audit:\n" + audit.ToJsonString());
        Assert.Equal(2, audit.Count(r => r!["kind"]!.GetValue<string>() == "key.released" && r.ToJsonString().Contains(mid, StringComparison.Ordinal)));
        Assert.Contains(mid, AuditLine(a, "vm.migrated"));
        Assert.Contains(mid, AuditLine(b, "vm.migrated-in"));

        // --- B → A, A's agent killed mid-migration ---------------------------------------------------
        var broken = Task.Run(() => Released(b, "vm", "migrate", "mig", "--to", a.MigrationAddress));
        var incomingQemu = Path.Combine(a.RunDir, "mig", "qemu.pid");
        await OpsSupport.EventuallyAsync(() => Task.FromResult(File.Exists(incomingQemu) || broken.IsCompleted), "A starts the incoming QEMU", 300_000);
        if (broken.IsCompleted)
        {
            Assert.Fail("the migration ended before A's agent could be killed: " + (await broken).Stderr);
        }
        a.KillAgent();
        var failed = await broken;
        output.WriteLine(failed.Stderr);
        Assert.NotEqual(0, failed.ExitCode);
        Assert.Contains("keeps running here", failed.Stderr);
        Assert.Equal("running", State(b));
        var atFailure = Tick(Region(b));
        await OpsSupport.EventuallyAsync(() => Task.FromResult(Tick(Region(b)) > atFailure + 1), "the guest counts on at B after the failed migration", 60_000);
        Assert.Contains("vm.migrate.failed", AuditLine(b, "vm.migrate.failed"));

        // A's agent comes back: the copy it never committed (its QEMU still paused, waiting) is killed and removed.
        await a.RestartAgentAsync();
        await a.WaitStateAsync("affirming", "attests again after the restart");
        await OpsSupport.EventuallyAsync(() => Task.FromResult(!Directory.Exists(Path.Combine(a.DataDir, "vms", "mig"))), "A removes the uncommitted copy", 60_000);
        Assert.Contains("vm.migrate-in.abandoned", AuditLine(a, "vm.migrate-in.abandoned"));

        // --- A snapshot taken at B, exported, imported at A, restored there ----------------------------
        Released(b, "vm", "snapshot", "mig", "--name", "s1").Ok();
        var atSnapshot = Tick(ReadRegion(Path.Combine(b.DataDir, "vms", "mig", "snapshots", "s1", "disks", "marker.qcow2"), vmk, "marker",
            Path.Combine(b.Dir, "peek.raw"), 512 * 1024, 128));
        b.Cli("vm", "kill", "mig").Ok();
        var archive = Path.Combine(Directory.CreateDirectory(Path.Combine(b.Dir, "export")).FullName, "mig.tar");
        var exported = JsonNode.Parse(b.Cli("vm", "export", "mig", "--out", archive, "--format", "json").Ok().Stdout)!;
        Assert.Equal(["s1"], exported["snapshots"]!.AsArray().Select(n => n!.GetValue<string>()));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(archive));
        AssertNowhere(Path.GetDirectoryName(archive)!, Encoding.ASCII.GetBytes(markerText), "the marker text (export)");
        b.Cli("vm", "delete", "mig").Ok();
        Assert.False(Directory.Exists(Path.Combine(b.DataDir, "vms", "mig")));
        var imported = JsonNode.Parse(a.Cli("vm", "import", archive, "--format", "json").Ok().Stdout)!;
        Assert.Equal("mig", imported["name"]!.GetValue<string>());
        Assert.Equal(exported["sha256"]!.GetValue<string>(), imported["sha256"]!.GetValue<string>());
        var restored = Released(a, "vm", "restore", "mig", "s1");
        Assert.True(restored.ExitCode == 0, restored.Stdout + restored.Stderr);
        var sinceRestore = System.Diagnostics.Stopwatch.StartNew();
        string restoredRegion = "";
        await OpsSupport.EventuallyAsync(() =>
        {
            restoredRegion = Region(a);
            return Task.FromResult(Tick(restoredRegion) > atSnapshot);
        }, "the restored guest counts at A", 60_000);
        output.WriteLine($"tick {atSnapshot} in the snapshot taken at B, {Tick(restoredRegion)} at A {sinceRestore.ElapsedMilliseconds} ms after the restore");
        Assert.True(sinceRestore.ElapsedMilliseconds < 15_000, "the guest took as long as a boot to count again at A");
        Assert.True(Tick(restoredRegion) <= atSnapshot + 15, $"the guest counts from {Tick(restoredRegion)}, the snapshot had {atSnapshot}");
        Assert.Equal(markerText, TickMarker(restoredRegion));

        // --- A → B through an active middle (it runs the key exchange with each side): it learns nothing of the VM ---
        // The middle listens in the root namespace on the bridge; it reaches B's migration address through B's bridge address.
        HostNetwork.Ip("route", "add", $"{h.Network.MigrationAddressB}/32", "via", h.Network.HostAddressB.ToString());
        await using (var middle = ActiveMiddle.Start(new System.Net.IPEndPoint(h.Network.GuardianAddress, 0), b.MigrationEndPoint))
        {
            var intercepted = Released(a, "vm", "migrate", "mig", "--to", middle.EndPoint.ToString());
            output.WriteLine(intercepted.Stderr + $"\nthe middle: {middle.Ended}");
            Assert.Equal(1, intercepted.ExitCode);
            Assert.Contains("migration.channel.proof", intercepted.Stderr);
            Assert.Contains("keeps running here", intercepted.Stderr);
            var read = middle.Read.ToList();
            // It read B's hello and A's challenge, and relayed B's proof, made on B's side of the middle: A refused it and said nothing more.
            Assert.Equal(["to-source:hello", "to-destination:challenge", "to-source:proof"], read.Select(r => $"{r.Direction}:{r.Message["type"]}"));
            var everything = string.Join("\n", read.Select(r => r.Message.ToJsonString()));
            Assert.DoesNotContain("vm-mig-1", everything);
            Assert.DoesNotContain("keyProtector", everything);
            Assert.DoesNotContain("\"vm\"", everything);
            Assert.DoesNotContain(kp.KpId, everything);
        }
        Assert.Equal("running", State(a));
        Assert.False(Directory.Exists(Path.Combine(b.DataDir, "vms", "mig")));
        Assert.Contains("migration.channel.proof", AuditLine(a, "vm.migrate.failed"));

        // --- A → B once B's boot state changed: refused, nothing moves -------------------------------
        using (var tpm = new TpmClient(SwtpmTransport.ConnectUnix(b.TpmSocket)))
        {
            tpm.PcrExtend(0, new TpmlDigestValues([new TpmtHa(TpmAlgId.Sha1, new byte[20]), new TpmtHa(TpmAlgId.Sha256, new byte[32])]));
        }
        await b.WaitStateAsync("contraindicated", "fails attestation after the PCR change", 60_000);
        var refused = a.Cli("vm", "migrate", "mig", "--to", b.MigrationAddress);
        output.WriteLine(refused.Stderr);
        Assert.Equal(1, refused.ExitCode);
        Assert.Matches("migration\\.destination\\.|agent\\.no-token", refused.Stderr);
        Assert.Contains("keeps running here", refused.Stderr);
        Assert.Equal("running", State(a));
        Assert.False(Directory.Exists(Path.Combine(b.DataDir, "vms", "mig")));
        var atRefusal = Tick(Region(a));
        await OpsSupport.EventuallyAsync(() => Task.FromResult(Tick(Region(a)) > atRefusal + 1), "the guest counts on at A after the refusal", 60_000);
        Assert.Equal(markerText, TickMarker(Region(a)));

        a.Cli("vm", "kill", "mig").Ok();
    }

    /// <summary>The last line of a host agent's audit log with this event.</summary>
    private static string AuditLine(AgentHost host, string kind) =>
        File.ReadLines(Path.Combine(host.DataDir, "audit.jsonl")).LastOrDefault(l => l.Contains($"\"event\":\"{kind}\"", StringComparison.Ordinal)) ?? $"(no {kind} in {host.Name}'s audit log)";
}

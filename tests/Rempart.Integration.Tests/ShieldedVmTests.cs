using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Rempart.AgentService;
using Rempart.Attestation.EventLog;
using Rempart.Host.Agent;
using Rempart.Host.Vm;
using Rempart.Integration.Tests.Ops;
using Rempart.KeyProtection;
using Rempart.Tpm;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Tests.Infrastructure;
using Xunit.Abstractions;
using static Rempart.Integration.Tests.VmTestDisks;

namespace Rempart.Integration.Tests;

/// <summary>
/// The shielded VM lifecycle end to end (issue 6 §5), through the CLI as an operator runs it: a
/// live Guardian, a swtpm host booted from a real firmware log, the host agent, the test guest
/// (docs/test-guest.md) imported into an encrypted bundle, started under Secure Boot with its
/// vTPM by a sandboxed unprivileged QEMU. One boot is shared by most assertions (TCG is slow);
/// the unsigned UKI and the unhealthy host follow. Fails when a tool is missing.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ShieldedVmTests(ITestOutputHelper output)
{
    private const uint EkCertRsaIndex = 0x01C00002;

    [Fact(Timeout = 1_500_000)]
    public async Task A_shielded_vm_boots_under_secure_boot_keeps_its_secrets_encrypted_survives_an_agent_restart_and_needs_a_healthy_host()
    {
        await using var h = await VmHostHarness.StartAsync("prod", "hv-vm");
        var guests = VmHostHarness.Guests;
        var markerText = VmHostHarness.MarkerText;
        var dir = h.Dir;
        var data = h.Data;
        var agent = h.Agent;
        var host = h.Host;
        var g = h.Guardian;
        var Cli = h.Cli;
        int qemuPid = 0;
        try
        {
            // The tenant, offline: owner key and key protector for group prod. The test keeps the VMK to look inside afterwards.
            var (kpFile, vmk) = await h.KeyProtectorAsync("vm-e2e-1", ShieldingLevel.Shielded);
            using var _vmk = vmk;
            // The marker disk asks the guest to stay up after its report (docs/test-guest.md).
            var marker = Path.Combine(dir, "marker.img");
            File.Copy(Path.Combine(guests, "marker.img"), marker);
            await using (var f = new FileStream(marker, FileMode.Open, FileAccess.Write))
            {
                await f.WriteAsync(Encoding.ASCII.GetBytes($"REMPART-MARKER {markerText}\nREMPART-MODE stay\n"));
            }

            // vm create: progress shown, bundle encrypted.
            var created = Cli("vm", "create", "web1", "--from", Path.Combine(guests, "guest.img"), "--kp", kpFile, "--memory", "512", "--disk", $"marker={marker}");
            Assert.True(created.ExitCode == 0, created.Stdout + created.Stderr);
            Assert.Contains("importing", created.Stderr);
            var bundle = Path.Combine(data, "vms", "web1");
            var info = JsonNode.Parse(Tool.Run("qemu-img", ["info", "--output=json", Path.Combine(bundle, "disks", "marker.qcow2")]).Ok().Stdout)!;
            Assert.Equal("luks", info["format-specific"]!["data"]!["encrypt"]!["format"]!.GetValue<string>());
            Assert.Equal("aes", info["format-specific"]!["data"]!["encrypt"]!["cipher-alg"]!.GetValue<string>()[..3]);
            Assert.Equal("xts", info["format-specific"]!["data"]!["encrypt"]!["cipher-mode"]!.GetValue<string>());
            AssertNowhere(bundle, Encoding.ASCII.GetBytes(markerText), "the marker text");
            // The vTPM state: a plain swtpm_setup state names its EK issuer in clear; ours must not.
            var plainTpm = Directory.CreateDirectory(Path.Combine(dir, "plain-tpm")).FullName;
            Tool.Run("swtpm_setup", ["--tpm2", "--tpmstate", plainTpm, "--create-ek-cert", "--pcr-banks", "sha256"]).Ok();
            var issuer = Encoding.ASCII.GetBytes("swtpm-localca");
            Assert.True(Directory.EnumerateFiles(plainTpm).Any(p => Contains(File.ReadAllBytes(p), issuer)), "the check below could not fail: a plain state has no 'swtpm-localca'");
            AssertNowhere(Path.Combine(bundle, "vtpm"), issuer, "the EK certificate's issuer");
            // The UEFI variables: the template's PK/KEK/db certificate (O = SnakeOil, L = Fort Collins) is in clear in the template, not in nvram.enc.
            var snakeoil = Encoding.ASCII.GetBytes("Fort Collins");
            Assert.True(Contains(File.ReadAllBytes(VmBundle.TemplatePath(SecureBootTemplate.Snakeoil)), snakeoil), "the template has no 'Fort Collins'");
            Assert.False(Contains(File.ReadAllBytes(Path.Combine(bundle, "nvram.enc")), snakeoil), "nvram.enc holds the template in clear");
            var ekBefore = ReadEkCertificate(bundle, vmk, Path.Combine(dir, "ek1"));
            // The state as created: put back after a run, it is an older authentic copy (a rollback).
            var asCreated = Directory.CreateDirectory(Path.Combine(dir, "as-created")).FullName;
            File.Copy(Path.Combine(bundle, "nvram.enc"), Path.Combine(asCreated, "nvram.enc"));
            var vtpmAsCreated = Directory.EnumerateFiles(Path.Combine(bundle, "vtpm")).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);

            // vm start.
            var started = Cli("vm", "start", "web1", "--format", "json");
            Assert.True(started.ExitCode == 0, started.Stdout + started.Stderr);
            var st = JsonNode.Parse(started.Stdout)!;
            Assert.Equal("running", st["state"]!.GetValue<string>());
            Assert.Equal("shielded", st["shielding"]!.GetValue<string>());
            Assert.Equal("software", st["ramProtection"]!.GetValue<string>());
            qemuPid = st["pid"]!.GetValue<int>();
            var releaseId = st["releaseId"]!.GetValue<string>();
            // QEMU and swtpm run as this VM's own uid (real, effective, saved, filesystem), from the
            // range systemd leaves unused, with no user entry; the VM's disk is that uid's alone for the run.
            var ids = ProcStatus(qemuPid)["Uid"].Split('\t').Distinct().ToList();
            Assert.Single(ids);
            int vmUid = int.Parse(ids[0], System.Globalization.CultureInfo.InvariantCulture);
            Assert.InRange(vmUid, 0x70020000, 0x7002FFFF);
            Assert.Equal($"{vmUid}\t{vmUid}\t{vmUid}\t{vmUid}", ProcStatus(qemuPid)["Gid"]);
            Assert.DoesNotContain(File.ReadLines("/etc/passwd"), l => l.Split(':')[2] == ids[0]);
            var asVmUid = Directory.EnumerateDirectories("/proc").Where(d => Path.GetFileName(d).All(char.IsAsciiDigit))
                .Select(d => { try { return (Status: ProcStatus(int.Parse(Path.GetFileName(d), System.Globalization.CultureInfo.InvariantCulture)), Pid: d); } catch (IOException) { return default; } })
                .Where(p => p.Status is not null && p.Status["Uid"].Split('\t')[0] == ids[0]).Select(p => p.Status["Name"]).Order().ToList();
            Assert.Equal(["qemu-system-x86", "swtpm"], asVmUid);
            var systemDisk = Path.Combine(bundle, "disks", "system.qcow2");
            Assert.Equal(ids[0], Tool.Run("stat", ["-c", "%u", systemDisk]).Ok().Stdout.Trim());
            Assert.Equal(0, Tool.Run("setpriv", [$"--reuid={vmUid}", $"--regid={vmUid}", "--clear-groups", "head", "-c", "4", systemDisk]).ExitCode);
            var otherVm = Tool.Run("setpriv", [$"--reuid={vmUid + 1}", $"--regid={vmUid + 1}", "--clear-groups", "head", "-c", "4", systemDisk]);
            Assert.NotEqual(0, otherVm.ExitCode); // another VM's uid cannot open this VM's disk
            Assert.Contains("Permission denied", otherVm.Stderr);
            var cmdline = (await File.ReadAllTextAsync($"/proc/{qemuPid}/cmdline")).Split('\0');
            Assert.DoesNotContain("-serial", cmdline);
            Assert.DoesNotContain(cmdline, a => a.Contains("secret", StringComparison.Ordinal) || a.Contains(markerText, StringComparison.Ordinal));
            output.WriteLine(Cli("vm", "status", "web1").Stdout);
            Assert.Single(Directory.EnumerateDirectories(h.Shm)); // the clear NVRAM, in memory-backed storage only

            // Shielded: no console (refused, audited); QMP through the allowlist.
            var console = Cli("vm", "console", "web1");
            Assert.Equal(1, console.ExitCode);
            Assert.Contains("vm.console.shielded", console.Stderr);
            var hmp = await agent.PostAsJsonAsync("v1/vms/web1/qmp", new { command = "human-monitor-command", arguments = new { command_line = "info registers" } });
            Assert.Equal(HttpStatusCode.Forbidden, hmp.StatusCode);
            Assert.Contains("qmp.refused", await hmp.Content.ReadAsStringAsync());

            // The guest reports to its own (encrypted) disk; the test reads it with the VMK it kept, sharing the image with the running QEMU.
            var markerDisk = Path.Combine(bundle, "disks", "marker.qcow2");
            string report = "";
            await OpsSupport.EventuallyAsync(() =>
            {
                report = ReadRegion(markerDisk, vmk, "marker", Path.Combine(dir, "peek.raw"), 4096, 512 * 1024 - 4096);
                return Task.FromResult(report.Contains("REMPART-GUEST: done", StringComparison.Ordinal));
            }, "the guest's report on its disk", 600_000);
            var ticks = Tick(ReadRegion(markerDisk, vmk, "marker", Path.Combine(dir, "peek.raw"), 512 * 1024, 64));

            // The agent restarts while the VM runs: the VM keeps running and is managed again.
            await h.RestartAgentAsync();
            Assert.True(Alive(qemuPid), "QEMU died with the agent");
            await OpsSupport.EventuallyAsync(async () =>
            {
                var s = Cli("vm", "status", "web1", "--format", "json");
                return s.ExitCode == 0 && JsonNode.Parse(s.Stdout)!["state"]!.GetValue<string>() == "running" && JsonNode.Parse(s.Stdout)!["pid"]!.GetValue<int>() == qemuPid;
            }, "the restarted agent manages the VM again", 60_000);
            await OpsSupport.EventuallyAsync(
                () => Task.FromResult(Tick(ReadRegion(markerDisk, vmk, "marker", Path.Combine(dir, "peek.raw"), 512 * 1024, 64)) > ticks),
                "the guest keeps counting", 120_000);
            await h.WaitAffirmingAsync();

            // vm stop: QEMU and swtpm gone, NVRAM re-encrypted (a new release after the restart), no clear copy, files back to root.
            var stopped = Cli("vm", "stop", "web1", "--timeout", "3");
            Assert.True(stopped.ExitCode == 0, stopped.Stdout + stopped.Stderr);
            Assert.False(Alive(qemuPid));
            Assert.Empty(Directory.EnumerateDirectories(h.Shm));
            Assert.False(File.Exists(Path.Combine(data, "vm-state", "web1.json")));
            Assert.Equal("0", Tool.Run("stat", ["-c", "%u", markerDisk, Path.Combine(bundle, "vtpm")]).Ok().Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Distinct().Single());
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(bundle));
            AssertNowhere(bundle, Encoding.ASCII.GetBytes(markerText), "the marker text (after the run)");

            // The guest's own report: Secure Boot on, vTPM present, the marker read from its encrypted disk, its log replays to its vTPM's PCRs.
            var lines = report.Split('\n').Where(l => l.StartsWith("REMPART-GUEST: ", StringComparison.Ordinal)).Select(l => l[15..]).ToList();
            output.WriteLine(string.Join('\n', lines.Where(l => !l.StartsWith("eventlog ", StringComparison.Ordinal))));
            Assert.Contains("secureboot=1", lines);
            Assert.Contains("setupmode=0", lines);
            Assert.Contains("tpm=1", lines);
            Assert.Contains("tpm-version 2", lines);
            Assert.Contains($"marker {markerText}", lines);
            Assert.DoesNotContain(lines, l => l.StartsWith("error", StringComparison.Ordinal));
            var eventLog = Convert.FromBase64String(string.Concat(lines.Where(l => l.StartsWith("eventlog ", StringComparison.Ordinal)).Select(l => l[9..])));
            var replay = EventLogReplay.Replay(EventLogParser.Parse(eventLog));
            int compared = 0;
            foreach (var l in lines.Where(l => l.StartsWith("pcr sha256 ", StringComparison.Ordinal)))
            {
                var p = l.Split(' ');
                if (replay.Banks[TpmAlgId.Sha256].TryGetValue(int.Parse(p[2], System.Globalization.CultureInfo.InvariantCulture), out var v))
                {
                    Assert.Equal(Convert.ToHexStringLower(v), p[3]);
                    compared++;
                }
            }
            Assert.True(compared >= 8, $"only {compared} PCRs compared");

            // The vTPM kept its identity.
            Assert.Equal(ekBefore, ReadEkCertificate(bundle, vmk, Path.Combine(dir, "ek2")));

            // Audit: the agent's chain, and the Guardian's release of this VM's key to this host.
            var audit = Cli("host", "audit", "--format", "json");
            Assert.True(audit.ExitCode == 0, audit.Stdout + audit.Stderr);
            var events = JsonNode.Parse(audit.Stdout)!["records"]!.AsArray().Select(r => r!["event"]!.GetValue<string>()).ToList();
            foreach (var e in new[] { "vm.created", "vm.started", "vm.console.refused", "vm.qmp.refused", "vm.reattached", "vm.ended", "vm.stopped" })
            {
                Assert.Contains(e, events);
            }
            var releases = await g.Admin.GetStringAsync("v1/releases?vmId=vm-e2e-1");
            Assert.Contains(releaseId, releases);

            // Rollback: the variables and vTPM state as created are put back (authentic, older). vm start
            // refuses before asking for the key; --accept-restored-state starts on them, audited.
            File.Copy(Path.Combine(asCreated, "nvram.enc"), Path.Combine(bundle, "nvram.enc"), overwrite: true);
            foreach (var f in Directory.EnumerateFiles(Path.Combine(bundle, "vtpm")))
            {
                File.Delete(f);
            }
            foreach (var (name, bytes) in vtpmAsCreated)
            {
                File.WriteAllBytes(Path.Combine(bundle, "vtpm", name), bytes);
                File.SetUnixFileMode(Path.Combine(bundle, "vtpm", name), UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }
            var rolledBack = Cli("vm", "start", "web1");
            Assert.Equal(1, rolledBack.ExitCode);
            output.WriteLine(rolledBack.Stderr);
            Assert.Contains("vm.state.rollback", rolledBack.Stderr);
            Assert.Contains("vTPM state", rolledBack.Stderr);
            Assert.DoesNotContain("key released", rolledBack.Stderr);
            Assert.False(File.Exists(Path.Combine(data, "vm-state", "web1.json")));
            var accepted = Cli("vm", "start", "web1", "--accept-restored-state", "--format", "json");
            Assert.True(accepted.ExitCode == 0, accepted.Stdout + accepted.Stderr);
            Assert.Contains("accepted as asked", accepted.Stderr);
            Assert.True(Cli("vm", "kill", "web1").ExitCode == 0);
            var stateEvents = JsonNode.Parse(Cli("host", "audit", "--format", "json").Ok().Stdout)!["records"]!.AsArray()
                .Select(r => r!["event"]!.GetValue<string>()).ToList();
            Assert.Contains("vm.state.rollback", stateEvents);
            Assert.True(stateEvents.IndexOf("vm.state.rollback") < stateEvents.LastIndexOf("vm.state.accepted"), string.Join(",", stateEvents));

            // The host becomes unhealthy (an extra PCR_Extend): no key, QEMU never starts, nothing left behind.
            using (var c = host.Tpm.Client())
            {
                c.PcrExtend(5, new TpmlDigestValues([new TpmtHa(TpmAlgId.Sha1, new byte[20]), new TpmtHa(TpmAlgId.Sha256, new byte[32])]));
            }
            await agent.PostAsync("v1/attest", null);
            var refused = Cli("vm", "start", "web1");
            Assert.Equal(1, refused.ExitCode);
            output.WriteLine(refused.Stderr);
            Assert.Matches("agent.no-token|release\\.", refused.Stderr);
            Assert.False(File.Exists(Path.Combine(data, "vm-state", "web1.json")));
            Assert.False(Directory.Exists(Path.Combine(dir, "run", "web1")));
            Assert.Empty(Directory.EnumerateDirectories(h.Shm));
        }
        finally
        {
            if (qemuPid > 0 && Alive(qemuPid))
            {
                System.Diagnostics.Process.GetProcessById(qemuPid).Kill();
            }
        }
    }

    [Fact(Timeout = 900_000)]
    public async Task The_firmware_refuses_an_unsigned_uki_seen_on_the_audited_console_of_an_encryption_supported_vm()
    {
        await using var h = await VmHostHarness.StartAsync("dev", "hv-unsigned");
        var guests = VmHostHarness.Guests;
        var agent = h.Agent;
        var Cli = h.Cli;
        var (kpFile, vmk) = await h.KeyProtectorAsync("vm-unsigned", ShieldingLevel.EncryptionSupported);
        vmk.Dispose();

        Assert.Equal(0, Cli("vm", "create", "unsigned", "--from", Path.Combine(guests, "guest-unsigned.img"), "--kp", kpFile).ExitCode);
        var started = Cli("vm", "start", "unsigned", "--format", "json");
        Assert.True(started.ExitCode == 0, started.Stdout + started.Stderr);
        var pid = JsonNode.Parse(started.Stdout)!["pid"]!.GetValue<int>();
        Assert.Contains("-serial", (await File.ReadAllTextAsync($"/proc/{pid}/cmdline")).Split('\0'));

        // The console goes through the agent, which relays and records the session.
        var plain = await agent.PostAsJsonAsync("v1/vms/unsigned/console", new { user = "test" });
        Assert.Equal(System.Net.HttpStatusCode.UpgradeRequired, plain.StatusCode);
        Assert.Contains("vm.console.upgrade", await plain.Content.ReadAsStringAsync());
        await using var s = await ConsoleClient.OpenAsync(h.Socket, "unsigned", "test");
        var busy = await Assert.ThrowsAsync<ConsoleRefusedException>(() => ConsoleClient.OpenAsync(h.Socket, "unsigned", "second"));
        Assert.Equal(("vm.console.busy", 409), (busy.Id, busy.Status));
        var text = new StringBuilder();
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(8));
        while (!text.ToString().Contains("Access Denied", StringComparison.Ordinal) && !text.ToString().Contains("Security Violation", StringComparison.Ordinal))
        {
            int n = await s.ReadAsync(buffer, cts.Token);
            Assert.True(n > 0, "the console closed before the firmware's refusal:\n" + text);
            text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }
        Assert.DoesNotContain("REMPART-GUEST:", text.ToString());
        output.WriteLine(text.ToString()[^Math.Min(2000, text.Length)..]);

        var killed = Cli("vm", "kill", "unsigned");
        Assert.True(killed.ExitCode == 0, killed.Stdout + killed.Stderr);
        var events = JsonNode.Parse(Cli("host", "audit", "--format", "json").Ok().Stdout)!["records"]!.AsArray()
            .Select(r => r!["event"]!.GetValue<string>()).ToList();
        Assert.Contains("vm.console.opened", events);
        Assert.Contains("vm.killed", events);
        // The kill closed QEMU's serial socket: the relay ends and records the session, with what went through it.
        JsonNode? closed = null;
        for (var wait = Stopwatch.StartNew(); closed is null && wait.Elapsed < TimeSpan.FromSeconds(30); await Task.Delay(200))
        {
            closed = JsonNode.Parse(Cli("host", "audit", "--format", "json").Ok().Stdout)!["records"]!.AsArray()
                .FirstOrDefault(r => r!["event"]!.GetValue<string>() == "vm.console.closed");
        }
        Assert.NotNull(closed);
        var opened = JsonNode.Parse(Cli("host", "audit", "--format", "json").Ok().Stdout)!["records"]!.AsArray()
            .Single(r => r!["event"]!.GetValue<string>() == "vm.console.opened");
        Assert.Equal(opened!["session"]!.GetValue<string>(), closed!["session"]!.GetValue<string>());
        Assert.Equal("test", opened["by"]!.GetValue<string>());
        Assert.Equal(Environment.ProcessId, opened["peerPid"]!.GetValue<int>());
        Assert.Equal("vm", closed["endedBy"]!.GetValue<string>());
        Assert.True(closed["bytesFromVm"]!.GetValue<long>() >= text.Length, closed.ToJsonString());
    }

    /// <summary>The vTPM's RSA EK certificate, read from a swtpm started on the bundle's state with the VM's key (the VM stopped).</summary>
    private static byte[] ReadEkCertificate(string bundle, VmMasterKey vmk, string run)
    {
        // On a copy: a swtpm run changes the state (reset counter), and the agent refuses to start
        // on vTPM state it did not leave (vm.state.rollback).
        var copy = Directory.CreateDirectory(run + "-state").FullName;
        foreach (var f in Directory.EnumerateFiles(Path.Combine(bundle, "vtpm")))
        {
            File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        }
        using var v = VtpmProcess.Start(copy, vmk, run, dataSocket: true);
        using var tpm = TpmClient.Open("swtpm:unix:" + v.DataSocket);
        return tpm.NvRead(EkCertRsaIndex);
    }

    private static Dictionary<string, string> ProcStatus(int pid) =>
        File.ReadLines($"/proc/{pid}/status").Select(l => l.Split(':', 2)).Where(p => p.Length == 2)
            .ToDictionary(p => p[0], p => p[1].Trim(), StringComparer.Ordinal);
}

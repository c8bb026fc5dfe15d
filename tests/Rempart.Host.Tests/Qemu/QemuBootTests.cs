using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Rempart.Host.Qemu;
using Rempart.Tpm.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Rempart.Host.Tests.Qemu;

/// <summary>
/// One real boot of the test guest (docs/test-guest.md) through this library: QemuCommandLine at
/// level encryption-supported, swtpm, disks added over QMP, QmpAllowlist in front of QMP, the
/// agent "restarting" (the QemuProcess disposed) and reattaching. Fails when a tool is missing.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class QemuBootTests(ITestOutputHelper output)
{
    public const string OvmfCode = "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd";
    public const string OvmfVars = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
    private static readonly TimeSpan BootLimit = TimeSpan.FromSeconds(420); // the machine is shared; 16-80 s seen

    [Fact(Timeout = 600_000)]
    public async Task The_test_guest_boots_secure_boot_with_a_vtpm_as_an_unprivileged_sandboxed_qemu_and_survives_the_agent()
    {
        var qemu = Tool.Which("qemu-system-x86_64");
        foreach (var tool in new[] { "swtpm", "swtpm_setup", "prlimit", "setsid", "setpriv", "chown" })
        {
            Tool.Which(tool);
        }
        Assert.True(File.Exists(OvmfCode) && File.Exists(OvmfVars), "ovmf is not installed: run scripts/setup.sh");
        var user = UnixUsers.Lookup(UnixUsers.VmUser);
        var root = FindRoot();
        Tool.Run("bash", [Path.Combine(root, "scripts", "build-test-guest.sh")], timeoutMs: 900_000).Ok();
        var guests = Path.Combine(root, "artifacts", "test-guest");
        var version = QemuVersion.Parse(Tool.Run(qemu, ["--version"]).Ok().Stdout);

        // The agent's layout: a root-owned folder QEMU may traverse; the VM's run folder (sockets,
        // pid file) owned by its user, 0700; the NVRAM in memory-backed storage; disks the user can read.
        var work = Directory.CreateTempSubdirectory("rempart-qemu-boot.");
        File.SetUnixFileMode(work.FullName, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
        var shm = Path.Combine("/dev/shm", Path.GetFileName(work.FullName));
        var run = Path.Combine(work.FullName, "run");
        var tpmState = Path.Combine(work.FullName, "tpm");
        Process? swtpm = null;
        var pid = 0;
        try
        {
            Directory.CreateDirectory(run, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            Directory.CreateDirectory(shm, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            var vars = Path.Combine(shm, "vars.fd");
            File.Copy(OvmfVars, vars);
            File.SetUnixFileMode(vars, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            var disks = new List<QemuDisk>();
            foreach (var (id, name) in new[] { ("disk0", "guest.img"), ("disk1", "marker.img") })
            {
                var copy = Path.Combine(work.FullName, name);
                File.Copy(Path.Combine(guests, name), copy);
                File.SetUnixFileMode(copy, UnixFileMode.UserRead);
                disks.Add(new QemuDisk(id, copy, "raw", null, ReadOnly: true)); // unencrypted for now; LUKS is the bundle's
            }
            Directory.CreateDirectory(tpmState, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            Tool.Run("swtpm_setup", ["--tpm2", "--tpmstate", tpmState, "--pcr-banks", "sha256", "--overwrite"]).Ok();
            var owned = new[] { run, shm, vars, tpmState }.Concat(disks.Select(d => d.Path));
            Tool.Run("chown", ["-R", $"{user.Uid}:{user.Gid}", .. owned]).Ok();

            // swtpm as boot-test-guest.sh starts it, but as the VM's user.
            var swtpmSocket = Path.Combine(run, "swtpm.sock");
            swtpm = Process.Start(new ProcessStartInfo(Tool.Which("swtpm"))
            {
                ArgumentList = { "socket", "--tpm2", "--tpmstate", $"dir={tpmState}", "--ctrl", $"type=unixio,path={swtpmSocket}", "--terminate",
                    "--runas", user.Name, "--log", $"file={Path.Combine(run, "swtpm.log")}" },
                RedirectStandardError = true,
                RedirectStandardOutput = true,
                UseShellExecute = false,
            })!;
            for (var i = 0; i < 100 && !File.Exists(swtpmSocket); i++)
            {
                await Task.Delay(50);
            }
            if (!File.Exists(swtpmSocket))
            {
                swtpm.Kill();
                Assert.Fail("swtpm did not open its socket: " + await swtpm.StandardError.ReadToEndAsync());
            }

            var probe = await new KvmProbe(OvmfCode, OvmfVars, qemu).ChooseAsync();
            var caps = HostCapabilities.Detect();
            var spec = new QemuLaunchSpec
            {
                Name = "boot-test",
                MemoryMiB = 512,
                Cpus = 1,
                Accelerator = probe.Accelerator,
                FirmwareCode = OvmfCode,
                NvramPath = vars,
                SwtpmSocket = swtpmSocket,
                Disks = disks,
                Shielding = ShieldingLevel.EncryptionSupported,
                SerialSocket = Path.Combine(run, "serial.sock"),
                QmpSocket = Path.Combine(run, "qmp.sock"),
                PidFile = Path.Combine(run, "qemu.pid"),
                RunAs = user,
                LockMemory = caps.CanLockMemory,
            };
            var invocation = QemuCommandLine.Build(spec, version, new QemuTools(Qemu: qemu));
            output.WriteLine($"accelerator {probe.Accelerator} ({probe.Reason}); memory lock {caps.CanLockMemory}; QEMU {version}");

            var clock = Stopwatch.StartNew();
            var allowlist = new QmpAllowlist();
            var vm = await QemuProcess.StartAsync(invocation, spec, allowlist, TimeSpan.FromSeconds(60));
            pid = vm.Pid;
            output.WriteLine($"QEMU pid {pid}, QMP up after {clock.ElapsedMilliseconds} ms");
            using var console = new SerialConsole(spec.SerialSocket!);
            foreach (var disk in disks)
            {
                await QemuDiskCommands.AddAsync(vm.Qmp, disk, default);
            }
            await vm.Qmp.ExecuteAsync("cont");
            var resumed = clock.Elapsed;

            // The process: the argv we built, not root, no capabilities, seccomp filter, core limit 0.
            Assert.Equal(invocation.QemuArgv, (await File.ReadAllTextAsync($"/proc/{pid}/cmdline")).TrimEnd('\0').Split('\0'));
            var status = ProcStatus(pid);
            Assert.Equal($"{user.Uid}\t{user.Uid}\t{user.Uid}\t{user.Uid}", status["Uid"]);
            Assert.Equal($"{user.Gid}\t{user.Gid}\t{user.Gid}\t{user.Gid}", status["Gid"]);
            Assert.Equal("", status["Groups"]);
            Assert.Equal("2", status["Seccomp"]);
            Assert.Equal("1", status["NoNewPrivs"]);
            Assert.Equal("0000000000000000", status["CapEff"]);
            Assert.Equal("0000000000000000", status["CapBnd"]);
            var coreLimit = File.ReadLines($"/proc/{pid}/limits").Single(l => l.StartsWith("Max core file size", StringComparison.Ordinal));
            Assert.Equal(["0", "0", "bytes"], coreLimit["Max core file size".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries));
            if (spec.LockMemory)
            {
                var locked = long.Parse(status["VmLck"].Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
                output.WriteLine($"VmLck {locked} kB");
                Assert.True(locked >= spec.MemoryMiB * 1024L, $"VmLck {locked} kB");
            }
            // Guest RAM is a memfd (no file on disk) and excluded from dumps.
            Assert.Contains(File.ReadLines($"/proc/{pid}/maps"), l => l.Contains("/memfd:memory-backend-memfd (deleted)", StringComparison.Ordinal));
            var memdev = (await vm.Qmp.ExecuteAsync("query-memdev"))!.AsArray().Single()!;
            Assert.False(memdev["dump"]!.GetValue<bool>());

            Assert.Equal("running", (await vm.Qmp.ExecuteAsync("query-status"))!["status"]!.GetValue<string>());
            var block = (await vm.Qmp.ExecuteAsync("query-block"))!.AsArray();
            Assert.Equal(["disk0", "disk1"], block.Select(b => b!["qdev"]?.GetValue<string>() ?? "")
                .Where(q => q.StartsWith("/machine/peripheral/", StringComparison.Ordinal)).Select(q => q.Split('/')[3]).Order());
            Assert.Equal("qmp.refused.hmp", (await Assert.ThrowsAsync<QmpRefusedException>(() =>
                vm.Qmp.ExecuteAsync("human-monitor-command", new() { ["command-line"] = "info registers" }))).RefusalId);
            Assert.Equal("qmp.refused.memory-read", (await Assert.ThrowsAsync<QmpRefusedException>(() =>
                vm.Qmp.ExecuteAsync("dump-guest-memory", new() { ["paging"] = false, ["protocol"] = "file:/tmp/rempart-dump" }))).RefusalId);
            Assert.False(File.Exists("/tmp/rempart-dump"));

            // The agent goes away (its QemuProcess is disposed, the VM is not stopped) and comes back.
            await vm.DisposeAsync();
            Assert.True(QemuProcess.Alive(pid));
            await using var again = await QemuProcess.ReattachAsync(spec.QmpSocket, spec.PidFile, allowlist, TimeSpan.FromSeconds(30));
            Assert.Equal(pid, again.Pid);
            Assert.Equal("running", (await again.Qmp.ExecuteAsync("query-status"))!["status"]!.GetValue<string>());
            var wrong = await Assert.ThrowsAsync<QemuProcessException>(() => QemuProcess.ReattachAsync(spec.SerialSocket!, spec.PidFile, allowlist, TimeSpan.FromSeconds(5)));
            Assert.Equal("qemu.reattach.other-process", wrong.Id);

            // The guest reports through the serial console the test (the agent) reads.
            var report = await console.WaitForAsync("REMPART-GUEST: tpm-version", BootLimit, () => again.IsRunning);
            var began = console.FirstSeen("REMPART-GUEST: begin");
            output.WriteLine($"guest /init {began?.TotalSeconds:0.0} s after cont; tpm-version {(clock.Elapsed - resumed).TotalSeconds:0.0} s after cont");
            Assert.Contains("REMPART-GUEST: secureboot=1", report, StringComparison.Ordinal);
            Assert.Contains("REMPART-GUEST: setupmode=0", report, StringComparison.Ordinal);
            Assert.Contains("REMPART-GUEST: tpm=1", report, StringComparison.Ordinal);
            Assert.Contains("REMPART-GUEST: tpm-version 2", report, StringComparison.Ordinal);
            Assert.DoesNotContain("REMPART-GUEST: error", report, StringComparison.Ordinal);

            try
            {
                await again.Qmp.ExecuteAsync("quit");
            }
            catch (QmpProtocolException ex) when (ex.Id == "qmp.closed")
            {
                // QEMU may close the connection before its reply is read.
            }
            Assert.True(await again.WaitForExitAsync(TimeSpan.FromSeconds(20)), "QEMU did not quit");
        }
        finally
        {
            if (pid > 0 && QemuProcess.Alive(pid))
            {
                Process.GetProcessById(pid).Kill();
            }
            if (swtpm is { HasExited: false })
            {
                swtpm.Kill();
            }
            swtpm?.Dispose();
            Directory.Delete(shm, recursive: true);
            work.Delete(recursive: true);
        }
    }

    private static Dictionary<string, string> ProcStatus(int pid) =>
        File.ReadLines($"/proc/{pid}/status").Select(l => l.Split(':', 2)).Where(p => p.Length == 2)
            .ToDictionary(p => p[0], p => p[1].Trim(), StringComparer.Ordinal);

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Rempart.slnx")))
        {
            dir = dir.Parent;
        }
        return dir?.FullName ?? FindFromSource();

        static string FindFromSource([System.Runtime.CompilerServices.CallerFilePath] string source = "")
        {
            var d = new DirectoryInfo(Path.GetDirectoryName(source)!);
            while (d is not null && !File.Exists(Path.Combine(d.FullName, "Rempart.slnx")))
            {
                d = d.Parent;
            }
            return d?.FullName ?? throw new InvalidOperationException("repository root (Rempart.slnx) not found");
        }
    }

    /// <summary>The serial console, read as the agent would (the client of QEMU's server socket).</summary>
    private sealed class SerialConsole : IDisposable
    {
        private readonly Socket _socket = new(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        private readonly StringBuilder _text = new();
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private readonly Dictionary<string, TimeSpan> _seen = new(StringComparer.Ordinal);
        private readonly Task _reader;

        public SerialConsole(string path)
        {
            _socket.Connect(new UnixDomainSocketEndPoint(path));
            _reader = Task.Run(async () =>
            {
                var buffer = new byte[8192];
                try
                {
                    int n;
                    while ((n = await _socket.ReceiveAsync(buffer, SocketFlags.None)) > 0)
                    {
                        lock (_text)
                        {
                            _text.Append(Encoding.UTF8.GetString(buffer, 0, n).Replace("\r", "", StringComparison.Ordinal));
                            foreach (var line in _text.ToString().Split('\n').Where(l => l.StartsWith("REMPART-GUEST: ", StringComparison.Ordinal)))
                            {
                                _seen.TryAdd(line, _clock.Elapsed);
                            }
                        }
                    }
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                }
            });
        }

        public TimeSpan? FirstSeen(string line)
        {
            lock (_text)
            {
                return _seen.TryGetValue(line, out var t) ? t : null;
            }
        }

        public async Task<string> WaitForAsync(string marker, TimeSpan limit, Func<bool> alive)
        {
            var clock = Stopwatch.StartNew();
            while (true)
            {
                string text;
                lock (_text)
                {
                    text = _text.ToString();
                }
                if (text.Contains(marker, StringComparison.Ordinal))
                {
                    return text;
                }
                Assert.True(clock.Elapsed < limit, $"no '{marker}' on the console within {limit.TotalSeconds} s:\n{Tail(text)}");
                Assert.True(alive(), $"QEMU exited before '{marker}':\n{Tail(text)}");
                await Task.Delay(200);
            }
        }

        private static string Tail(string text) => text.Length > 4000 ? text[^4000..] : text;

        public void Dispose()
        {
            _socket.Dispose();
            _reader.Wait(TimeSpan.FromSeconds(5));
        }
    }
}

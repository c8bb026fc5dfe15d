using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Rempart.AgentService;
using Rempart.Host.Agent;
using Rempart.Host.Vm;
using Rempart.Integration.Tests.Ops;
using Rempart.KeyProtection;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Integration.Tests;

/// <summary>
/// One hypervisor for VM tests: a live Guardian with a host group, a swtpm host booted from a real
/// firmware log, the host agent in this process (its socket, data and run folders in a temporary
/// folder the VM user may traverse), enrolled, approved and affirmed; the test guest built. The
/// CLI runs through scripts/rempart against the agent's socket, as an operator would.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal sealed class VmHostHarness : IAsyncDisposable
{
    private VmHostHarness(GuardianFixture guardian, SwtpmHost host, string dir, HostAgentOptions options, VmHostOptions vmOptions, string group, bool ownsGuardian = true)
    {
        _ownsGuardian = ownsGuardian;
        Guardian = guardian;
        Host = host;
        Dir = dir;
        Options = options;
        VmOptions = vmOptions;
        Group = group;
        Socket = Path.Combine(dir, "agent", "agent.sock");
        App = AgentServer.Build(options, Socket, vmOptions);
        Agent = AgentSocket.Client(Socket);
        Agent.Timeout = TimeSpan.FromMinutes(10);
    }

    private readonly bool _ownsGuardian;

    public GuardianFixture Guardian { get; }

    public SwtpmHost Host { get; }

    public string Dir { get; }

    public string Group { get; }

    public HostAgentOptions Options { get; }

    public VmHostOptions VmOptions { get; }

    public string Socket { get; }

    public string Data => Options.DataDir;

    /// <summary>Where this agent puts the clear NVRAM of running VMs (a folder of /dev/shm of its own).</summary>
    public string Shm => VmOptions.ShmDir;

    public WebApplication App { get; private set; }

    public HttpClient Agent { get; }

    public static string Guests => Path.Combine(OpsSupport.RepoRoot, "artifacts", "test-guest");

    public static string MarkerText => File.ReadAllText(Path.Combine(Guests, "marker.txt")).Trim();

    /// <param name="sharedGuardian">A Guardian another harness started (its group exists already); this harness does not dispose it.</param>
    /// <param name="migrationListen">Where this agent accepts live migrations.</param>
    public static async Task<VmHostHarness> StartAsync(string group, string hostname, GuardianFixture? sharedGuardian = null, System.Net.IPEndPoint? migrationListen = null)
    {
        foreach (var tool in new[] { "qemu-system-x86_64", "qemu-img", "swtpm", "swtpm_setup", "setpriv", "setsid", "prlimit", "chown" })
        {
            Tool.Which(tool);
        }
        Tool.Run("bash", [Path.Combine(OpsSupport.RepoRoot, "scripts", "build-test-guest.sh")], timeoutMs: 900_000).Ok();
        var guardian = sharedGuardian ?? await GuardianFixture.StartAsync();
        var host = new SwtpmHost();
        var dir = Directory.CreateTempSubdirectory("rempart-vmhost-").FullName;
        try
        {
            if (sharedGuardian is null)
            {
                await guardian.CreateGroupAsync(group);
            }
            File.SetUnixFileMode(dir, VmManager.Traversable);
            var log = Path.Combine(dir, "boot.log");
            await File.WriteAllBytesAsync(log, host.EventLog);
            var data = Path.Combine(dir, "data");
            var options = new HostAgentOptions(guardian.Url, null, host.Tpm.Address, data, log, hostname, TimeSpan.FromSeconds(2));
            // A private memory-backed folder for the clear NVRAM copies, so that tests can tell theirs from other VMs' on this machine.
            var shm = Directory.CreateDirectory(Path.Combine("/dev/shm", "rempart-vmtest-" + Path.GetFileName(dir))).FullName;
            File.SetUnixFileMode(shm, VmManager.Traversable);
            var h = new VmHostHarness(guardian, host, dir, options,
                VmHostOptions.Under(data, Path.Combine(dir, "run")) with { ShmDir = shm, MigrationListen = migrationListen }, group, sharedGuardian is null);
            await h.App.StartAsync();
            await OpsSupport.EventuallyAsync(async () => (await h.StatusAsync())["state"]?.GetValue<string>() == "pending", "the agent enrols", 60_000);
            await guardian.ApproveAsync((await h.StatusAsync())["hostId"]!.GetValue<string>(), group);
            await h.WaitAffirmingAsync();
            return h;
        }
        catch
        {
            host.Dispose();
            if (sharedGuardian is null)
            {
                await guardian.DisposeAsync();
            }
            Directory.Delete(dir, true);
            throw;
        }
    }

    /// <summary>The agent's view of the host (GET /v1/status).</summary>
    public async Task<JsonNode> StatusAsync() => JsonNode.Parse(await Agent.GetStringAsync("v1/status"))!;

    public Task WaitAffirmingAsync() =>
        OpsSupport.EventuallyAsync(async () => (await StatusAsync())["state"]?.GetValue<string>() == "affirming", "the agent attests", 60_000);

    /// <summary>The CLI against this agent.</summary>
    public Tool.Result Cli(params string[] args) =>
        Tool.Run(Path.Combine(OpsSupport.RepoRoot, "scripts", "rempart"), args, new Dictionary<string, string> { ["REMPART_AGENT_SOCKET"] = Socket }, timeoutMs: 600_000);

    /// <summary>A tenant's key protector for this Guardian and group, written to DIR/VMID.kp; the caller keeps (and disposes) the VMK.</summary>
    public async Task<(string KpFile, VmMasterKey Vmk)> KeyProtectorAsync(string vmId, ShieldingLevel shielding)
    {
        var metadata = GuardianMetadata.Parse(await Guardian.Http.GetStringAsync("v1/guardian/metadata"));
        using var owner = OwnerKey.Generate();
        var (kp, vmk) = KeyProtector.Create(vmId, new ReleasePolicy(shielding, [Group]), owner.PublicKey, [metadata]);
        var file = Path.Combine(Dir, vmId + ".kp");
        await File.WriteAllTextAsync(file, kp.ToJson());
        return (file, vmk);
    }

    /// <summary>The agent process goes away (VMs keep running) and a new one starts on the same folders.</summary>
    public async Task RestartAgentAsync()
    {
        await App.StopAsync();
        await App.DisposeAsync();
        App = AgentServer.Build(Options, Socket, VmOptions);
        await App.StartAsync();
    }

    /// <summary>A failed test may leave a VM running: QEMU (its command line names this folder) is killed; swtpm follows it.</summary>
    private void KillLeftoverVms()
    {
        var states = Path.Combine(Data, "vm-state");
        foreach (var file in Directory.Exists(states) ? Directory.EnumerateFiles(states, "*.json") : [])
        {
            try
            {
                var pid = JsonNode.Parse(File.ReadAllText(file))?["QemuPid"]?.GetValue<int>() ?? 0;
                if (pid > 0 && File.ReadAllText($"/proc/{pid}/cmdline").Contains(Dir, StringComparison.Ordinal))
                {
                    using var p = System.Diagnostics.Process.GetProcessById(pid);
                    p.Kill();
                    p.WaitForExit(10_000);
                }
            }
            catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException or System.Text.Json.JsonException)
            {
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await App.StopAsync();
            await App.DisposeAsync();
        }
        finally
        {
            KillLeftoverVms();
            Agent.Dispose();
            Host.Dispose();
            if (_ownsGuardian)
            {
                await Guardian.DisposeAsync();
            }
            Directory.Delete(Dir, true);
            Directory.Delete(VmOptions.ShmDir, true);
        }
    }
}

/// <summary>What VM tests look at: files without a plaintext, a region of an encrypted disk (read with the VMK, shared with a running QEMU), the guest's tick, a process.</summary>
internal static class VmTestDisks
{
    public static void AssertNowhere(string folder, byte[] needle, string what)
    {
        foreach (var file in Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories))
        {
            Assert.False(Contains(File.ReadAllBytes(file), needle), $"{what} is in clear in {file}");
        }
    }

    public static bool Contains(byte[] haystack, byte[] needle) => haystack.AsSpan().IndexOf(needle) >= 0;

    /// <summary>Bytes [offset, offset+length) of an encrypted disk as text up to the first NUL, read with qemu-img (shared with a running QEMU: -U).</summary>
    public static string ReadRegion(string disk, VmMasterKey vmk, string diskId, string scratch, int offset, int length)
    {
        var pass = Encoding.ASCII.GetString(EncryptedDisk.Passphrase(vmk, diskId));
        File.Delete(scratch);
        Tool.Run("qemu-img", ["convert", "-U", "--object", EncryptedDisk.SecretObject(), "--image-opts", EncryptedDisk.ImageOpts(disk), "-O", "raw", scratch], stdin: pass).Ok();
        var bytes = File.ReadAllBytes(scratch).AsSpan(offset, length);
        int end = bytes.IndexOf((byte)0);
        return Encoding.ASCII.GetString(end < 0 ? bytes : bytes[..end]);
    }

    /// <summary>N of the guest's <c>REMPART-TICK N MARKER</c> line (0 before the first tick).</summary>
    public static int Tick(string region) =>
        region.StartsWith("REMPART-TICK ", StringComparison.Ordinal) ? int.Parse(region[13..].Split(' ', '\n')[0], System.Globalization.CultureInfo.InvariantCulture) : 0;

    /// <summary>MARKER of the guest's tick line: what the guest read back from its RAM (tmpfs) at that tick.</summary>
    public static string? TickMarker(string region) =>
        region.StartsWith("REMPART-TICK ", StringComparison.Ordinal) && region.Split(' ', '\n') is { Length: >= 3 } parts ? parts[2] : null;

    public static bool Alive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)] is not ('Z' or 'X');
        }
        catch (IOException)
        {
            return false;
        }
    }
}

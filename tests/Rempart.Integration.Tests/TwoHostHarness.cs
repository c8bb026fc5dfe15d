using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Rempart.Attestation.Tests;
using Rempart.Host.Agent;
using Rempart.Integration.Tests.Ops;
using Rempart.Tpm;
using Rempart.Tpm.Tests.Infrastructure;
using Rempart.Tpm.Transport;

namespace Rempart.Integration.Tests;

/// <summary>
/// Two hypervisor hosts on one machine for live-migration tests (issue 7 §2): a
/// <see cref="HostNetwork"/>, one Guardian in this process serving HTTPS on the bridge address,
/// a host group, and per host its own swtpm host TPM (booted from a real firmware log) and a host
/// agent process (scripts/rempart-host), both inside the host's namespace, the agent listening for
/// migrations on its end of the migration link. Both agents are enrolled, approved into the group
/// and affirming when <see cref="StartAsync"/> returns; the test guest is built.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal sealed class TwoHostHarness : IAsyncDisposable
{
    public const int MigrationPort = 7070;

    private TwoHostHarness(HostNetwork network, GuardianFixture guardian, string group)
    {
        Network = network;
        Guardian = guardian;
        Group = group;
    }

    public HostNetwork Network { get; }

    public GuardianFixture Guardian { get; }

    public string Group { get; }

    /// <summary>The host in namespace a (migration address 10.X.1.1).</summary>
    public AgentHost A { get; private set; } = null!;

    /// <summary>The host in namespace b (migration address 10.X.1.2).</summary>
    public AgentHost B { get; private set; } = null!;

    /// <summary>Brings both hosts up; <paramref name="log"/> hears each step with the time since the start.</summary>
    public static async Task<TwoHostHarness> StartAsync(string group, bool buildGuest = true, Action<string>? log = null)
    {
        var clock = Stopwatch.StartNew();
        void Step(string what) => log?.Invoke($"{clock.Elapsed.TotalSeconds,6:0.0} s  {what}");
        foreach (var tool in new[] { "ip", "dumpcap", "tshark", "qemu-system-x86_64", "qemu-img", "swtpm", "swtpm_setup", "setpriv", "setsid", "prlimit", "chown" })
        {
            Tool.Which(tool);
        }
        if (buildGuest)
        {
            Tool.Run("bash", [Path.Combine(OpsSupport.RepoRoot, "scripts", "build-test-guest.sh")], timeoutMs: 900_000).Ok();
        }
        Step("tools present, test guest built");
        // Build the agent once, before two of them would both find it stale.
        Tool.Run(Path.Combine(OpsSupport.RepoRoot, "scripts", "rempart-host"), ["--help"], timeoutMs: 600_000).Ok();
        var network = new HostNetwork();
        Step($"agent built; network {network.NamespaceA} / {network.NamespaceB}, 10.{network.Subnet}.0.0/24");
        GuardianFixture? guardian = null;
        TwoHostHarness? h = null;
        try
        {
            guardian = await GuardianFixture.StartAsync(https: new IPEndPoint(network.GuardianAddress, 0));
            await guardian.CreateGroupAsync(group);
            Step($"Guardian on {guardian.Url}");
            h = new TwoHostHarness(network, guardian, group);
            h.A = AgentHost.Start(h, network.NamespaceA, "hv-a", new IPEndPoint(network.MigrationAddressA, MigrationPort));
            h.B = AgentHost.Start(h, network.NamespaceB, "hv-b", new IPEndPoint(network.MigrationAddressB, MigrationPort));
            Step("host TPMs booted, agents started");
            foreach (var host in new[] { h.A, h.B })
            {
                await host.WaitStateAsync("pending", "enrols");
                var id = (await host.StatusAsync())["hostId"]?.GetValue<string>() ?? throw new InvalidOperationException($"{host.Name}: no hostId in status\n{host.Output()}");
                await guardian.ApproveAsync(id, group);
                host.HostId = id;
                Step($"{host.Name} enrolled as {id}, approved");
            }
            await Task.WhenAll(h.A.WaitStateAsync("affirming", "attests"), h.B.WaitStateAsync("affirming", "attests"));
            Step("both affirming");
            return h;
        }
        catch
        {
            if (h is not null)
            {
                await h.DisposeAsync();
            }
            else
            {
                if (guardian is not null)
                {
                    await guardian.DisposeAsync();
                }
                network.Dispose();
            }
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        var errors = new List<Exception>();
        foreach (var host in new[] { A, B })
        {
            if (host is not null)
            {
                try
                {
                    await host.StopAgentAsync();
                }
                catch (Exception e)
                {
                    errors.Add(e);
                }
            }
        }
        try
        {
            // QEMU and swtpm (of the host and of VMs, as rempart-vm) are in the namespaces: killed here.
            Network.Dispose();
        }
        catch (Exception e)
        {
            errors.Add(e);
        }
        foreach (var host in new[] { A, B })
        {
            host?.RemoveFolders();
        }
        await Guardian.DisposeAsync();
        if (errors.Count > 0)
        {
            throw new AggregateException("the two-host harness did not shut down cleanly", errors);
        }
    }
}

/// <summary>
/// One host of a <see cref="TwoHostHarness"/>: its folder (traversable by the VM user), swtpm host
/// TPM on a unix socket and agent process, both in its namespace. A unix-socket TPM needs no
/// network in the namespace, and this process reaches it to replay the boot log.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal sealed class AgentHost
{
    private static readonly string AgentScript = Path.Combine(OpsSupport.RepoRoot, "scripts", "rempart-host");
    private readonly StringBuilder _output = new();
    private string[] _agentArgs = [];
    private Process _agent = null!;
    private Process _tpm = null!;

    private AgentHost(string ns, string name, IPEndPoint migration, string dir)
    {
        Namespace = ns;
        Name = name;
        MigrationEndPoint = migration;
        Dir = dir;
        Socket = Path.Combine(dir, "agent", "agent.sock");
        ShmDir = Path.Combine("/dev/shm", "rempart-2host-" + Path.GetFileName(dir));
        Agent = AgentSocket.Client(Socket);
        Agent.Timeout = TimeSpan.FromMinutes(10);
    }

    public string Namespace { get; }

    public string Name { get; }

    public IPEndPoint MigrationEndPoint { get; }

    /// <summary>ip:port the agent accepts migrations on.</summary>
    public string MigrationAddress => MigrationEndPoint.ToString();

    public string Dir { get; }

    public string DataDir => Path.Combine(Dir, "data");

    public string RunDir => Path.Combine(Dir, "run");

    public string ShmDir { get; }

    public string Socket { get; }

    public string TpmSocket => Path.Combine(Dir, "tpm.sock");

    public string TpmAddress => "swtpm:unix:" + TpmSocket;

    public HttpClient Agent { get; }

    public string HostId { get; internal set; } = "";

    /// <summary>The agent process's id (the dotnet process: ip netns exec and the scripts exec it).</summary>
    public int AgentPid => _agent.Id;

    public bool AgentExited => _agent.HasExited;

    internal static AgentHost Start(TwoHostHarness harness, string ns, string name, IPEndPoint migration)
    {
        var dir = Directory.CreateTempSubdirectory("rempart-2host-").FullName;
        var host = new AgentHost(ns, name, migration, dir);
        try
        {
            File.SetUnixFileMode(dir, VmManager.Traversable);
            Directory.CreateDirectory(host.ShmDir);
            File.SetUnixFileMode(host.ShmDir, VmManager.Traversable);
            var log = Path.Combine(dir, "boot.log");
            var eventLog = Fixtures.Bytes("go-tpm-tools__arch-linux-workstation.bin");
            File.WriteAllBytes(log, eventLog);
            host.StartTpm(eventLog);
            host._agentArgs =
            [
                "serve", "--guardian", harness.Guardian.Url.ToString(), "--guardian-fingerprint", harness.Guardian.Fingerprint!,
                "--tpm", host.TpmAddress, "--data", host.DataDir, "--eventlog", log, "--socket", host.Socket, "--hostname", name,
                "--period", "2", "--run-dir", host.RunDir, "--shm-dir", host.ShmDir, "--migration-listen", host.MigrationAddress,
            ];
            host._agent = host.Spawn(AgentScript, host._agentArgs, "agent");
            return host;
        }
        catch
        {
            // The processes in the namespace go with the network; the folders go here.
            host.RemoveFolders();
            throw;
        }
    }

    /// <summary>swtpm manufactured with EK certificates from its local CA (as <see cref="Swtpm"/>), serving a unix socket in the namespace, then the boot replayed.</summary>
    private void StartTpm(byte[] eventLog)
    {
        var state = Path.Combine(Dir, "tpm");
        Directory.CreateDirectory(state);
        Tool.Run("swtpm_setup", ["--tpm2", "--tpmstate", state, "--create-ek-cert", "--pcr-banks", "sha1,sha256", "--overwrite"]).Ok();
        _tpm = Spawn(Tool.Which("swtpm"),
        [
            "socket", "--tpm2", "--tpmstate", $"dir={state}", "--server", $"type=unixio,path={TpmSocket}",
            "--ctrl", $"type=unixio,path={TpmSocket}.ctrl", "--flags", "not-need-init,startup-clear",
        ], "swtpm");
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            if (_tpm.HasExited)
            {
                throw new InvalidOperationException($"{Name}: swtpm exited with {_tpm.ExitCode}:\n{Output()}");
            }
            try
            {
                using var c = new TpmClient(SwtpmTransport.ConnectUnix(TpmSocket));
                SwtpmHost.Replay(c, eventLog);
                return;
            }
            catch (TpmTransportException) when (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(50);
            }
        }
    }

    private Process Spawn(string file, IEnumerable<string> args, string tag)
    {
        var p = Process.Start(HostNetwork.InNamespace(Namespace, file, args)) ?? throw new InvalidOperationException($"cannot start {file}");
        void Append(string? line, string stream)
        {
            if (line is not null)
            {
                lock (_output)
                {
                    _output.Append(tag).Append(' ').Append(stream).Append(": ").AppendLine(line);
                }
            }
        }
        p.OutputDataReceived += (_, e) => Append(e.Data, "out");
        p.ErrorDataReceived += (_, e) => Append(e.Data, "err");
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    /// <summary>The agent's and swtpm's output so far, the last <paramref name="maxChars"/> characters.</summary>
    public string Output(int maxChars = 8000)
    {
        lock (_output)
        {
            var s = _output.ToString();
            return s.Length <= maxChars ? s : "…" + s[^maxChars..];
        }
    }

    /// <summary>The agent's view of the host (GET /v1/status).</summary>
    public async Task<JsonNode> StatusAsync() => JsonNode.Parse(await Agent.GetStringAsync("v1/status"))!;

    /// <summary>Waits until the agent's status says <paramref name="state"/>; a timeout (or the agent exiting) fails with its output.</summary>
    public async Task WaitStateAsync(string state, string what, int timeoutMs = 90_000)
    {
        var until = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        string last = "(no answer)";
        while (true)
        {
            if (_agent.HasExited)
            {
                throw new Xunit.Sdk.XunitException($"{Name}: the agent exited with {_agent.ExitCode} before it {what}\n{Output()}");
            }
            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                var status = JsonNode.Parse(await Agent.GetStringAsync("v1/status", cts.Token))!;
                if (status["state"]?.GetValue<string>() == state)
                {
                    return;
                }
                last = status.ToJsonString();
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                last = e.Message;
            }
            if (DateTime.UtcNow > until)
            {
                throw new Xunit.Sdk.XunitException($"{Name}: timed out after {timeoutMs} ms waiting until the agent {what} (state {state}); last status: {last}\n{Output()}");
            }
            await Task.Delay(200);
        }
    }

    /// <summary>The CLI against this host's agent, as VmHostHarness runs it.</summary>
    public Tool.Result Cli(params string[] args) =>
        Tool.Run(Path.Combine(OpsSupport.RepoRoot, "scripts", "rempart"), args, new Dictionary<string, string> { ["REMPART_AGENT_SOCKET"] = Socket }, timeoutMs: 600_000);

    /// <summary>Failure injection: SIGKILL to the agent (its VMs, QEMU and swtpm, keep running).</summary>
    public void KillAgent()
    {
        if (!_agent.HasExited)
        {
            _agent.Kill();
            _agent.WaitForExit(10_000);
        }
    }

    /// <summary>
    /// The agent process goes away (SIGTERM, unless it is already gone, e.g. after
    /// <see cref="KillAgent"/>) and a new one starts in the namespace on the same folders and
    /// options; its output follows the old one's in <see cref="Output"/>.
    /// </summary>
    public async Task RestartAgentAsync()
    {
        await StopAgentAsync();
        _agent.Dispose();
        lock (_output)
        {
            _output.AppendLine("--- agent restarted ---");
        }
        _agent = Spawn(AgentScript, _agentArgs, "agent");
    }

    /// <summary>SIGTERM (an orderly shutdown), SIGKILL after 15 s.</summary>
    public async Task StopAgentAsync()
    {
        if (_agent is null || _agent.HasExited)
        {
            return;
        }
        Posix.Signal(_agent.Id, Posix.SIGTERM);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        try
        {
            await _agent.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            _agent.Kill();
            await _agent.WaitForExitAsync();
        }
    }

    internal void RemoveFolders()
    {
        Agent.Dispose();
        _agent?.Dispose();
        _tpm?.Dispose();
        foreach (var d in new[] { Dir, ShmDir })
        {
            if (Directory.Exists(d))
            {
                Directory.Delete(d, true);
            }
        }
    }
}

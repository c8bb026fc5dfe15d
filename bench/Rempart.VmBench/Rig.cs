using System.Diagnostics;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Rempart.AgentService;
using Rempart.Host.Agent;
using Rempart.Host.Vm;
using Rempart.Integration.Tests;
using Rempart.KeyProtection;

namespace Rempart.VmBench;

/// <summary>
/// The shielded side, set up as tests/Rempart.Integration.Tests/ShieldedVmTests.cs does: a live
/// Guardian (SQLite, file key provider), a swtpm host booted from a real firmware log, the host
/// agent in this process (its unix socket API and its <see cref="VmManager"/>), enrolled, approved
/// and attesting; a tenant's owner key and an encryption-supported key protector (so the serial
/// console exists and the guest's <c>begin</c> line can be seen).
/// </summary>
public sealed class Rig : IAsyncDisposable
{
    private readonly GuardianFixture _guardian;
    private readonly SwtpmHost _host;
    private readonly WebApplication _agent;
    private readonly HttpClient _api;
    private readonly string _socket;
    private readonly OwnerKey _owner;
    private readonly List<VmMasterKey> _keys = [];

    private Rig(string dir, GuardianFixture guardian, SwtpmHost host, WebApplication agent, string socket, OwnerKey owner)
    {
        Dir = dir;
        _guardian = guardian;
        _host = host;
        _agent = agent;
        _owner = owner;
        _api = AgentSocket.Client(socket);
        _socket = socket;
        _api.Timeout = TimeSpan.FromMinutes(10);
        Vms = agent.Services.GetRequiredService<VmManager>();
        Agent = agent.Services.GetRequiredService<HostAgent>();
    }

    public string Dir { get; }

    public VmManager Vms { get; }

    public HostAgent Agent { get; }

    /// <summary>
    /// The Guardian fixture's clock stands still (tests move it); this moves it to now and has the
    /// agent attest, so the health token is fresh however long the benchmark has been running.
    /// </summary>
    public async Task FreshTokenAsync()
    {
        var behind = DateTimeOffset.UtcNow - _guardian.Clock.GetUtcNow();
        if (behind > TimeSpan.Zero)
        {
            _guardian.Clock.Advance(behind);
        }
        await Agent.AttestOnceAsync(CancellationToken.None);
    }

    /// <summary>The Guardian's server-side release time so far: (sum of seconds, count), from its /metrics.</summary>
    public async Task<(double Sum, long Count)> GuardianReleaseTimeAsync()
    {
        var text = await _guardian.Admin.GetStringAsync("metrics");
        double Value(string name) => double.Parse(text.Split('\n').First(l => l.StartsWith(name + " ", StringComparison.Ordinal))[(name.Length + 1)..],
            System.Globalization.CultureInfo.InvariantCulture);
        return (Value("rempart_release_duration_seconds_sum"), (long)Value("rempart_release_duration_seconds_count"));
    }

    public static async Task<Rig> StartAsync(string dir)
    {
        var guardian = await GuardianFixture.StartAsync();
        await guardian.CreateGroupAsync("bench");
        var host = new SwtpmHost();
        var log = Path.Combine(dir, "boot.log");
        await File.WriteAllBytesAsync(log, host.EventLog);
        var socket = Path.Combine(dir, "agent", "agent.sock");
        var data = Path.Combine(dir, "data");
        var options = new HostAgentOptions(guardian.Url, null, host.Tpm.Address, data, log, "hv-bench", TimeSpan.FromSeconds(30));
        var app = AgentServer.Build(options, socket, VmHostOptions.Under(data, Path.Combine(dir, "run")));
        await app.StartAsync();
        var rig = new Rig(dir, guardian, host, app, socket, OwnerKey.Generate());
        await rig.UntilAsync("pending");
        await guardian.ApproveAsync((await rig.StatusAsync())["hostId"]!.GetValue<string>(), "bench");
        await rig.UntilAsync("affirming");
        return rig;
    }

    /// <summary>A key protector for <paramref name="vmId"/> (group bench); the VMK is kept to look inside and to time NVRAM opens.</summary>
    public async Task<(string Kp, VmMasterKey Vmk)> KeyProtectorAsync(string vmId, ShieldingLevel level)
    {
        var metadata = GuardianMetadata.Parse(await _guardian.Http.GetStringAsync("v1/guardian/metadata"));
        var (kp, vmk) = KeyProtector.Create(vmId, new ReleasePolicy(level, ["bench"]), _owner.PublicKey, [metadata]);
        _keys.Add(vmk);
        return (kp.ToJson(), vmk);
    }

    /// <summary>The serial console of a running encryption-supported VM, through the agent's API (audited there).</summary>
    public async Task<GuestConsole> ConsoleAsync(string name)
    {
        return GuestConsole.Watch(await ConsoleClient.OpenAsync(_socket, name, "vmbench"));
    }

    /// <summary>Waits until the agent's watcher has cleaned up after QEMU's exit.</summary>
    public async Task UntilStoppedAsync(string name, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (Vms.Status(name).State != "stopped")
        {
            if (sw.Elapsed > timeout)
            {
                await Vms.StopAsync(name, force: true, TimeSpan.Zero, CancellationToken.None);
                throw new TimeoutException($"{name} did not stop within {timeout.TotalSeconds:0} s (killed)");
            }
            await Task.Delay(50);
        }
    }

    private async Task<JsonNode> StatusAsync() => JsonNode.Parse(await _api.GetStringAsync("v1/status"))!;

    private async Task UntilAsync(string state)
    {
        var sw = Stopwatch.StartNew();
        while ((await StatusAsync())["state"]?.GetValue<string>() != state)
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(90))
            {
                throw new TimeoutException($"the agent never reached '{state}': {await StatusAsync()}");
            }
            await Task.Delay(200);
        }
    }

    /// <summary>A copy of the test guest's marker disk whose second line asks for <paramref name="mode"/> (or none).</summary>
    public static string Marker(string guests, string to, string? mode)
    {
        File.Copy(Path.Combine(guests, "marker.img"), to, overwrite: true);
        var text = File.ReadAllText(Path.Combine(guests, "marker.txt")).Trim();
        using var f = new FileStream(to, FileMode.Open, FileAccess.Write);
        f.Write(Encoding.ASCII.GetBytes($"REMPART-MARKER {text}\n" + (mode is null ? "" : $"REMPART-MODE {mode}\n")));
        return to;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var vm in Vms.List().Where(v => v.State is "running" or "stopping"))
        {
            try
            {
                await Vms.StopAsync(vm.Name, force: true, TimeSpan.Zero, CancellationToken.None);
            }
            catch (VmOperationException)
            {
            }
        }
        _api.Dispose();
        await _agent.StopAsync();
        await _agent.DisposeAsync();
        _host.Dispose();
        await _guardian.DisposeAsync();
        foreach (var k in _keys)
        {
            k.Dispose();
        }
        _owner.Dispose();
    }
}

using System.Net.Sockets;
using System.Text.Json.Nodes;
using Rempart.Host.Agent;
using Rempart.Attestation.Protocol;
using Rempart.Host.Migration;
using Rempart.Host.Tests.Infrastructure;

namespace Rempart.Host.Tests.Migration;

/// <summary>
/// The destination's side before the Guardian has accepted a migration: the peer is anyone, so it
/// must not hold the VM's name, nor a connection for long without saying hello. (A fake host
/// stands in for the attestation side: these steps never reach the TPM or the Guardian.)
/// </summary>
public sealed class MigrationListenerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-miglisten-").FullName;
    private readonly SocketPairs _pairs;

    public MigrationListenerTests() => _pairs = new SocketPairs(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private VmManager Manager() =>
        new(VmHostOptions.Under(Path.Combine(_dir, "data"), Path.Combine(_dir, "run")) with { ShmDir = _dir },
            (_, _) => throw new InvalidOperationException("no release in these tests"),
            new AgentAuditLog(Path.Combine(_dir, "audit.jsonl")))
        { MigrationHost = new NoGuardian() };

    [Fact]
    public async Task A_peer_that_said_hello_does_not_hold_the_vm_name_for_another()
    {
        await using var m = Manager();
        var hello = new JsonObject { ["type"] = "hello", ["protocol"] = MigrationKeys.Protocol, ["vm"] = "web1", ["vmId"] = "vm-1", ["kpId"] = "kp" };
        var (peer1, dest1) = await _pairs.StreamsAsync();
        var (peer2, dest2) = await _pairs.StreamsAsync();
        var receive1 = Task.Run(() => m.ReceiveMigrationAsync(dest1, "peer1", CancellationToken.None));
        var receive2 = Task.Run(() => m.ReceiveMigrationAsync(dest2, "peer2", CancellationToken.None));
        await using var c1 = new SecureChannel(peer1);
        await using var c2 = new SecureChannel(peer2);
        await c1.ProtectHandshakeAsync(initiator: true, MigrationKeys.Protocol, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        await c1.SendHandshakeAsync((JsonObject)hello.DeepClone(), CancellationToken.None);
        Assert.Equal("host-b", SecureChannel.Expect(await c1.ReceiveHandshakeAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)), "hello")["hostId"]!.GetValue<string>());
        // The first peer now stalls (it has no Guardian acceptance to offer); a second hello for the same VM is answered, not refused as vm.busy.
        await c2.ProtectHandshakeAsync(initiator: true, MigrationKeys.Protocol, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        await c2.SendHandshakeAsync((JsonObject)hello.DeepClone(), CancellationToken.None);
        Assert.Equal("host-b", SecureChannel.Expect(await c2.ReceiveHandshakeAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)), "hello")["hostId"]!.GetValue<string>());
        peer1.Dispose();
        peer2.Dispose();
        await Task.WhenAll(Ended(receive1), Ended(receive2)).WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task A_peer_that_never_says_hello_is_dropped_long_before_the_90_s_step_limit()
    {
        await using var m = Manager();
        var (peer, dest) = await _pairs.StreamsAsync();
        var receive = Task.Run(() => m.ReceiveMigrationAsync(dest, "idle", CancellationToken.None));
        await Ended(receive).WaitAsync(TimeSpan.FromSeconds(40));
        var said = new MemoryStream();
        await peer.CopyToAsync(said).WaitAsync(TimeSpan.FromSeconds(10)); // the destination closed the connection (after its error frame)
        peer.Dispose();
    }

    private static async Task Ended(Task t)
    {
        try
        {
            await t;
        }
        catch (Exception)
        {
            // refused or cut: what matters here is that it ends
        }
    }

    private sealed class NoGuardian : IMigrationHost
    {
        public HostCredential CurrentCredential() => new("host-b", "token-b", [], null!, null!);

        public Task<MigrationAuthorisation> AuthoriseMigrationAsync(string keyProtector, string destinationToken, HostCredential me, CancellationToken ct) =>
            throw new NotSupportedException();

        public Task<MigrationAcceptance> AcceptMigrationAsync(string migrationId, string keyProtector, HostCredential me, CancellationToken ct) =>
            throw new NotSupportedException();

        public Task CompleteMigrationAsync(string migrationId, string outcome, string? reason, HostCredential me, CancellationToken ct) => Task.CompletedTask;

        public Task<Rempart.KeyProtection.VmMasterKey> UnwrapAsync(ReleaseResponse release, string keyProtector, HostCredential me, CancellationToken ct) =>
            throw new NotSupportedException();

        public Task<byte[]> DecryptShareAsync(byte[] wrapped, byte[] label, HostCredential me, CancellationToken ct) => throw new NotSupportedException();
    }
}

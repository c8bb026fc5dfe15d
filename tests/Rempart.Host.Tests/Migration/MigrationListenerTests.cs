using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Rempart.Host.Agent;
using Rempart.Host.Guardian;
using Rempart.Attestation.Protocol;
using Rempart.Host.Migration;
using Rempart.Host.Tests.Infrastructure;

namespace Rempart.Host.Tests.Migration;

/// <summary>
/// The destination's side before the Guardian has accepted a migration: the peer is anyone, so it
/// gets nothing but this host's hello, holds no VM name, and makes the TPM open nothing until the
/// Guardian says the migration is one to this host. (A fake host stands in for the attestation
/// side, to count what reaches the TPM and the Guardian; MigrationFlowTests and VmMigrationTests
/// run the real ones.)
/// </summary>
public sealed class MigrationListenerTests : IDisposable
{
    private const string Mid = "0123456789abcdef0123456789abcdef";
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-miglisten-").FullName;
    private readonly SocketPairs _pairs;
    private readonly FakeHost _host = new();

    public MigrationListenerTests() => _pairs = new SocketPairs(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private VmManager Manager(IPEndPoint? listen = null) =>
        new(VmHostOptions.Under(Path.Combine(_dir, "data"), Path.Combine(_dir, "run")) with { ShmDir = _dir, MigrationListen = listen },
            (_, _) => throw new InvalidOperationException("no release in these tests"),
            new AgentAuditLog(Path.Combine(_dir, "audit.jsonl")))
        { MigrationHost = _host };

    /// <summary>Connects as a source would: key exchange, then the destination's hello.</summary>
    private async Task<(SecureChannel Channel, byte[] Binding, NetworkStream Peer, Task Receive)> ConnectAsync(VmManager m, string from)
    {
        var (peer, dest) = await _pairs.StreamsAsync();
        var receive = Task.Run(() => m.ReceiveMigrationAsync(dest, from, CancellationToken.None));
        var channel = new SecureChannel(peer);
        var binding = await channel.ProtectHandshakeAsync(initiator: true, MigrationKeys.Protocol, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        var hello = SecureChannel.Expect(await channel.ReceiveHandshakeAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)), "hello");
        Assert.Equal("host-b", hello["hostId"]!.GetValue<string>());
        return (channel, binding, peer, receive);
    }

    /// <summary>A TCP connection to the listener from <paramref name="local"/> (any 127.x address is this machine's): held (the key exchange and the hello come back) or closed at once.</summary>
    private static async Task<(TcpClient Client, bool Held)> DialAsync(string local, int port)
    {
        var client = new TcpClient(new IPEndPoint(IPAddress.Parse(local), 0));
        await client.ConnectAsync(IPAddress.Loopback, port).WaitAsync(TimeSpan.FromSeconds(30));
        var channel = new SecureChannel(client.GetStream());
        try
        {
            await channel.ProtectHandshakeAsync(initiator: true, MigrationKeys.Protocol, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
            SecureChannel.Expect(await channel.ReceiveHandshakeAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)), "hello");
            return (client, true);
        }
        catch (Exception e) when (e is MigrationChannelException or IOException)
        {
            return (client, false);
        }
    }

    [Fact]
    public async Task The_listener_serves_4_connections_from_one_address_and_8_in_all_and_closes_the_others_at_once()
    {
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }
        await using var m = Manager(new IPEndPoint(IPAddress.Loopback, port));
        using var stop = new CancellationTokenSource();
        var listening = Task.Run(() => m.ListenForMigrationsAsync(stop.Token));
        var audit = Path.Combine(_dir, "audit.jsonl");
        await Eventually(() => Task.FromResult(File.Exists(audit) && File.ReadAllText(audit).Contains("agent.migration-listener")), "the listener never started");
        var open = new List<TcpClient>();
        try
        {
            for (int i = 0; i < VmManager.MaxMigrationConnectionsPerAddress; i++)
            {
                var (c, held) = await DialAsync("127.0.0.1", port);
                open.Add(c);
                Assert.True(held, $"connection {i + 1} from 127.0.0.1 was closed");
            }
            // One address has its share: the next from it is closed though the listener has room.
            var (extra, extraHeld) = await DialAsync("127.0.0.1", port);
            extra.Dispose();
            Assert.False(extraHeld, "a fifth connection from one address was served");
            for (int i = 0; i < VmManager.MaxMigrationConnections - VmManager.MaxMigrationConnectionsPerAddress; i++)
            {
                var (c, held) = await DialAsync("127.0.0.2", port);
                open.Add(c);
                Assert.True(held, $"connection {i + 1} from 127.0.0.2 was closed");
            }
            // The listener is full: a third address is closed too.
            var (full, fullHeld) = await DialAsync("127.0.0.3", port);
            full.Dispose();
            Assert.False(fullHeld, "a ninth connection was served");
            // One goes away: its slot (and its address's) is free again.
            open[0].Dispose();
            open.RemoveAt(0);
            await Eventually(async () =>
            {
                var (c, held) = await DialAsync("127.0.0.3", port);
                if (held)
                {
                    open.Add(c);
                }
                else
                {
                    c.Dispose();
                }
                return held;
            }, "a slot freed by a closed connection was never served again");
        }
        finally
        {
            foreach (var c in open)
            {
                c.Dispose();
            }
            stop.Cancel();
            await listening.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    /// <summary>Retries <paramref name="attempt"/> for up to 30 s (a freed slot is released once the destination saw the peer go).</summary>
    private static async Task Eventually(Func<Task<bool>> attempt, string failure)
    {
        for (var clock = System.Diagnostics.Stopwatch.StartNew(); clock.Elapsed < TimeSpan.FromSeconds(30); await Task.Delay(200))
        {
            if (await attempt())
            {
                return;
            }
        }
        Assert.Fail(failure);
    }

    private static JsonObject Challenge(byte[] wrapped) =>
        new() { ["type"] = "challenge", ["migrationId"] = Mid, ["wrappedShare"] = Convert.ToBase64String(wrapped) };

    [Fact]
    public async Task A_peer_that_stalls_after_the_hello_holds_nothing_and_another_is_answered()
    {
        await using var m = Manager();
        var (c1, _, peer1, receive1) = await ConnectAsync(m, "peer1");
        // The first peer now stalls (it has no migration the Guardian knows); a second one is answered all the same.
        var (c2, _, peer2, receive2) = await ConnectAsync(m, "peer2");
        Assert.Equal((0, 0), (_host.Checks, _host.Decrypts));
        await c1.DisposeAsync();
        await c2.DisposeAsync();
        peer1.Dispose();
        peer2.Dispose();
        await Task.WhenAll(Ended(receive1), Ended(receive2)).WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task A_challenge_for_a_migration_the_Guardian_does_not_know_is_refused_before_the_TPM_opens_anything()
    {
        await using var m = Manager();
        _host.Check = _ => throw new GuardianException("migration.unknown", "no migration " + Mid, 404);
        var (c, _, peer, receive) = await ConnectAsync(m, "stranger");
        await c.SendHandshakeAsync(Challenge(RandomNumberGenerator.GetBytes(256)), CancellationToken.None);
        var e = await Assert.ThrowsAsync<MigrationChannelException>(async () =>
            SecureChannel.Expect(await c.ReceiveHandshakeAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)), "proof"));
        Assert.Equal("migration.unknown", e.Id);
        Assert.Equal("migration.unknown", (await Assert.ThrowsAsync<VmOperationException>(() => receive.WaitAsync(TimeSpan.FromSeconds(30)))).Id);
        Assert.Equal((1, 0), (_host.Checks, _host.Decrypts));
        await c.DisposeAsync();
        peer.Dispose();
    }

    [Theory]
    [InlineData("../../v1/hosts")]
    [InlineData("0123456789ABCDEF0123456789ABCDEF")]
    [InlineData("0123456789abcdef")]
    public async Task A_challenge_whose_migration_id_is_malformed_is_refused_before_the_Guardian_is_asked(string id)
    {
        await using var m = Manager();
        var (c, _, peer, receive) = await ConnectAsync(m, "stranger");
        await c.SendHandshakeAsync(new JsonObject { ["type"] = "challenge", ["migrationId"] = id, ["wrappedShare"] = "AAAA" }, CancellationToken.None);
        Assert.Equal("migration.id", (await Assert.ThrowsAsync<MigrationChannelException>(() => receive.WaitAsync(TimeSpan.FromSeconds(30)))).Id);
        Assert.Equal((0, 0), (_host.Checks, _host.Decrypts));
        await c.DisposeAsync();
        peer.Dispose();
    }

    [Fact]
    public async Task A_migration_the_Guardian_records_for_another_host_is_refused_before_the_TPM_opens_anything()
    {
        await using var m = Manager();
        _host.Check = id => Check(id, destination: "host-c");
        var (c, _, peer, receive) = await ConnectAsync(m, "other");
        await c.SendHandshakeAsync(Challenge(RandomNumberGenerator.GetBytes(256)), CancellationToken.None);
        Assert.Equal("vm.migrate.authorisation", (await Assert.ThrowsAsync<VmOperationException>(() => receive.WaitAsync(TimeSpan.FromSeconds(30)))).Id);
        Assert.Equal((1, 0), (_host.Checks, _host.Decrypts));
        await c.DisposeAsync();
        peer.Dispose();
    }

    [Fact]
    public async Task For_a_migration_the_Guardian_knows_the_destination_proves_it_opened_the_share_on_this_connection()
    {
        await using var m = Manager();
        var ks = RandomNumberGenerator.GetBytes(MigrationKeys.ShareLength);
        var wrapped = RandomNumberGenerator.GetBytes(256);
        _host.Check = id => Check(id, destination: "host-b");
        _host.Decrypt = (w, label) =>
        {
            // The TPM is asked for exactly the share sent, under the source-to-destination label of this migration.
            Assert.Equal(wrapped, w);
            Assert.Equal(MigrationKeys.DecryptLabel(Mid, 's'), label);
            return (byte[])ks.Clone();
        };
        var (c, binding, peer, receive) = await ConnectAsync(m, "source");
        await c.SendHandshakeAsync(Challenge(wrapped), CancellationToken.None);
        var proof = SecureChannel.Expect(await c.ReceiveHandshakeAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)), "proof");
        var given = Convert.FromBase64String(proof["proof"]!.GetValue<string>());
        MigrationKeys.CheckDestinationProof(ks, binding, Mid, given);
        // The same proof checked against another connection's binding (a middle's other half) fails.
        Assert.Throws<MigrationChannelException>(() => MigrationKeys.CheckDestinationProof(ks, RandomNumberGenerator.GetBytes(32), Mid, given));
        Assert.Equal((1, 1), (_host.Checks, _host.Decrypts));
        await c.DisposeAsync();
        peer.Dispose();
        await Ended(receive).WaitAsync(TimeSpan.FromSeconds(30));
    }

    private static MigrationCheck Check(string id, string destination) =>
        new(id, "vm-1", DateTimeOffset.UtcNow.AddMinutes(2), new MigrationPeer("host-a", "g", "", ""), new MigrationPeer(destination, "g", "", ""));

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

    private sealed class FakeHost : IMigrationHost
    {
        public Func<string, MigrationCheck> Check { get; set; } = _ => throw new NotSupportedException();

        public Func<byte[], byte[], byte[]> Decrypt { get; set; } = (_, _) => throw new NotSupportedException();

        public int Checks;
        public int Decrypts;

        public HostCredential CurrentCredential() => new("host-b", "token-b", [], null!, null!);

        public Task<MigrationAuthorisation> AuthoriseMigrationAsync(string keyProtector, string destinationToken, HostCredential me, CancellationToken ct) =>
            throw new NotSupportedException();

        public Task<MigrationCheck> CheckMigrationAsync(string migrationId, HostCredential me, CancellationToken ct)
        {
            Interlocked.Increment(ref Checks);
            return Task.FromResult(Check(migrationId));
        }

        public Task<MigrationAcceptance> AcceptMigrationAsync(string migrationId, string keyProtector, HostCredential me, CancellationToken ct) =>
            throw new NotSupportedException();

        public Task CompleteMigrationAsync(string migrationId, string outcome, string? reason, HostCredential me, CancellationToken ct) => Task.CompletedTask;

        public Task<Rempart.KeyProtection.VmMasterKey> UnwrapAsync(ReleaseResponse release, string keyProtector, HostCredential me, CancellationToken ct) =>
            throw new NotSupportedException();

        public Task<byte[]> DecryptShareAsync(byte[] wrapped, byte[] label, HostCredential me, CancellationToken ct)
        {
            Interlocked.Increment(ref Decrypts);
            return Task.FromResult(Decrypt(wrapped, label));
        }
    }
}

using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Rempart.Host.Migration;

namespace Rempart.Host.Tests.Migration;

/// <summary>
/// The handshake's key exchange (<see cref="SecureChannel.ProtectHandshakeAsync"/>, docs/migration.md
/// "Key agreement"): over real loopback TCP, a watcher of the wire sees the key shares and nothing of the
/// handshake after them; someone in the middle who runs the exchange with each side reads the handshake
/// but leaves the two ends with different bindings, so their transcripts — and confirmations — differ;
/// an old or malformed peer is refused by name.
/// </summary>
public sealed class SecureChannelHandshakeTests
{
    private const string Protocol = MigrationKeys.Protocol;
    private static readonly CancellationToken None = CancellationToken.None;

    [Fact]
    public async Task After_the_key_shares_nothing_of_the_handshake_is_readable_on_the_wire()
    {
        var (sourceEnd, tapIn) = await PairAsync();
        var (tapOut, destinationEnd) = await PairAsync();
        var wire = new MemoryStream();
        var tap = Task.WhenAll(Copy(tapIn, tapOut, wire), Copy(tapOut, tapIn, wire));
        await using var source = new SecureChannel(sourceEnd);
        await using var destination = new SecureChannel(destinationEnd);

        var bindings = await Task.WhenAll(
            source.ProtectHandshakeAsync(initiator: true, Protocol, None),
            destination.ProtectHandshakeAsync(initiator: false, Protocol, None));
        Assert.Equal(bindings[0], bindings[1]);
        Assert.False(source.Keyed); // handshake keys only

        await source.SendHandshakeAsync(new JsonObject { ["type"] = "hello", ["vm"] = "VM-NAME-7d1c" }, None);
        Assert.Equal("VM-NAME-7d1c", SecureChannel.Expect(await destination.ReceiveHandshakeAsync(None), "hello")["vm"]!.GetValue<string>());
        await destination.SendHandshakeAsync(new JsonObject { ["type"] = "hello", ["hostId"] = "HOST-ID-93af", ["token"] = "TOKEN-5e2b" }, None);
        var hello = SecureChannel.Expect(await source.ReceiveHandshakeAsync(None), "hello");
        Assert.Equal("TOKEN-5e2b", hello["token"]!.GetValue<string>());

        // Then the channel's own keys, sequence numbers from 0 again, and records flow.
        var k1 = RandomNumberGenerator.GetBytes(32);
        var k2 = RandomNumberGenerator.GetBytes(32);
        source.Key(k1, k2);
        destination.Key(k2, k1);
        Assert.True(source.Keyed);
        await source.SendControlAsync(new JsonObject { ["type"] = "confirm", ["x"] = "CONFIRM-0c4d" }, None);
        Assert.Equal("CONFIRM-0c4d", SecureChannel.Expect(await destination.ReceiveControlAsync(None), "confirm")["x"]!.GetValue<string>());
        Assert.Throws<InvalidOperationException>(() => source.Key(k1, k2));

        sourceEnd.Dispose();
        destinationEnd.Dispose();
        await tap;
        var seen = wire.ToArray();
        // Positive control on this very capture: the key shares are clear and name the protocol.
        Assert.True(Contains(seen, Encoding.ASCII.GetBytes(Protocol)), "the capture does not show the key shares");
        foreach (var secret in new[] { "VM-NAME-7d1c", "HOST-ID-93af", "TOKEN-5e2b", "CONFIRM-0c4d", "hello", "hostId" })
        {
            Assert.False(Contains(seen, Encoding.ASCII.GetBytes(secret)), $"'{secret}' crossed the wire in clear");
        }
    }

    [Fact]
    public async Task Someone_in_the_middle_who_runs_the_exchange_with_each_side_leaves_them_with_different_bindings()
    {
        var (sourceEnd, middleIn) = await PairAsync();
        var (middleOut, destinationEnd) = await PairAsync();
        await using var source = new SecureChannel(sourceEnd);
        await using var destination = new SecureChannel(destinationEnd);
        await using var towardSource = new SecureChannel(middleIn);
        await using var towardDestination = new SecureChannel(middleOut);

        var bindings = await Task.WhenAll(
            source.ProtectHandshakeAsync(initiator: true, Protocol, None),
            towardSource.ProtectHandshakeAsync(initiator: false, Protocol, None),
            towardDestination.ProtectHandshakeAsync(initiator: true, Protocol, None),
            destination.ProtectHandshakeAsync(initiator: false, Protocol, None));
        // Each link agrees with itself, so the middle can read and relay the handshake ...
        Assert.Equal(bindings[0], bindings[1]);
        Assert.Equal(bindings[2], bindings[3]);
        await source.SendHandshakeAsync(new JsonObject { ["type"] = "hello", ["vm"] = "v" }, None);
        await towardDestination.SendHandshakeAsync(await towardSource.ReceiveHandshakeAsync(None), None);
        Assert.Equal("v", (await destination.ReceiveHandshakeAsync(None))["vm"]!.GetValue<string>());
        // ... but the two ends hold different bindings, so their transcripts and confirmations differ.
        Assert.NotEqual(bindings[0], bindings[3]);
        var peer = new Rempart.Attestation.Protocol.MigrationPeer("h", "g", new string('a', 68), "AA");
        var mid = new string('0', 32);
        var atSource = MigrationKeys.Transcript(mid, "vm", peer, peer, [1], [2], bindings[0]);
        var atDestination = MigrationKeys.Transcript(mid, "vm", peer, peer, [1], [2], bindings[3]);
        var ks = RandomNumberGenerator.GetBytes(32);
        var kd = RandomNumberGenerator.GetBytes(32);
        using var vmk = Rempart.KeyProtection.VmMasterKey.FromBytes(RandomNumberGenerator.GetBytes(32));
        using var sourceKeys = new MigrationKeys.Schedule(ks, kd, vmk, mid, atSource);
        using var destinationKeys = new MigrationKeys.Schedule(ks, kd, vmk, mid, atDestination);
        var e = Assert.Throws<MigrationChannelException>(() => sourceKeys.CheckConfirmation("destination", destinationKeys.Confirmation("destination")));
        Assert.Equal("migration.channel.confirm", e.Id);
    }

    [Fact]
    public async Task A_source_of_the_previous_protocol_is_refused_by_name()
    {
        var (a, b) = await PairAsync();
        await using var oldSource = new SecureChannel(a);
        await using var destination = new SecureChannel(b);
        await oldSource.SendHandshakeAsync(new JsonObject { ["type"] = "hello", ["protocol"] = "rempart-migration/1", ["vm"] = "v" }, None);
        var e = await Assert.ThrowsAsync<MigrationChannelException>(() => destination.ProtectHandshakeAsync(initiator: false, Protocol, None));
        Assert.Equal("vm.migrate.protocol", e.Id);
        Assert.Contains("rempart-migration/1", e.Message);
    }

    public static TheoryData<string, string> BadShares()
    {
        using var p384 = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        using var rsa = RSA.Create(2048);
        using var p256 = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        var offCurve = p256.PublicKey.ExportSubjectPublicKeyInfo();
        offCurve[^1] ^= 0x01; // y no longer matches x
        var trailing = (byte[])[.. p256.PublicKey.ExportSubjectPublicKeyInfo(), 0];
        return new()
        {
            { "not base64", "%%%" },
            { "empty", "" },
            { "a P-384 key", Convert.ToBase64String(p384.PublicKey.ExportSubjectPublicKeyInfo()) },
            { "an RSA key", Convert.ToBase64String(rsa.ExportSubjectPublicKeyInfo()) },
            { "a point off the curve", Convert.ToBase64String(offCurve) },
            { "trailing bytes", Convert.ToBase64String(trailing) },
            { "random bytes", Convert.ToBase64String(RandomNumberGenerator.GetBytes(91)) },
            { "too long", new string('A', 400) },
        };
    }

    [Theory]
    [MemberData(nameof(BadShares))]
    public async Task A_key_share_that_is_not_one_P256_public_key_is_refused(string what, string key)
    {
        var (a, b) = await PairAsync();
        await using var source = new SecureChannel(a);
        await using var destination = new SecureChannel(b);
        await source.SendHandshakeAsync(new JsonObject { ["type"] = "key-share", ["protocol"] = Protocol, ["key"] = key }, None);
        var e = await Assert.ThrowsAsync<MigrationChannelException>(() => destination.ProtectHandshakeAsync(initiator: false, Protocol, None));
        Assert.True(e.Id == "migration.channel.key-share", $"{what}: {e.Id} {e.Message}");
    }

    [Fact]
    public async Task A_refusal_sent_during_the_exchange_arrives_with_its_id()
    {
        var (a, b) = await PairAsync();
        await using var source = new SecureChannel(a);
        await using var destination = new SecureChannel(b);
        var exchange = source.ProtectHandshakeAsync(initiator: true, Protocol, None);
        Assert.Equal("key-share", (await destination.ReceiveHandshakeAsync(None))["type"]!.GetValue<string>());
        await destination.SendHandshakeAsync(new JsonObject { ["type"] = "error", ["id"] = "vm.exists", ["message"] = "a VM named v already exists" }, None);
        var e = await Assert.ThrowsAsync<MigrationChannelException>(() => exchange);
        Assert.Equal("vm.exists", e.Id);
    }

    private static async Task<(Stream A, Stream B)> PairAsync()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var client = new TcpClient();
        var accept = listener.AcceptTcpClientAsync();
        await client.ConnectAsync(IPAddress.Loopback, ((IPEndPoint)listener.LocalEndpoint).Port);
        var server = await accept;
        return (client.GetStream(), server.GetStream());
    }

    /// <summary>Forwards bytes one way and records them (a passive watcher of the wire) until either side closes.</summary>
    private static async Task Copy(Stream from, Stream to, MemoryStream record)
    {
        var buffer = new byte[4096];
        try
        {
            int n;
            while ((n = await from.ReadAsync(buffer)) > 0)
            {
                lock (record)
                {
                    record.Write(buffer, 0, n);
                }
                await to.WriteAsync(buffer.AsMemory(0, n));
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
        }
        finally
        {
            from.Dispose();
            to.Dispose();
        }
    }

    private static bool Contains(byte[] haystack, byte[] needle) => haystack.AsSpan().IndexOf(needle) >= 0;
}

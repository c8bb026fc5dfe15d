using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Rempart.Host.Migration;
using Rempart.Host.Tests.Infrastructure;

namespace Rempart.Host.Tests.Migration;

/// <summary>
/// The relay's bulk path (MigrationRelay: blocking sockets on its own threads): QEMU's stream goes
/// through sealed records and comes out whole and in order, with file records interleaved; a changed
/// byte, a wrong count, a silent peer, a dead QEMU and a cancellation each end it with their own error,
/// never with altered bytes handed to QEMU and never with a hang. Unix socket pairs stand in for
/// QEMU's sockets and the TCP connection (the relay treats all of them as byte streams).
/// </summary>
public sealed class MigrationRelayTests : IDisposable
{
    private static readonly byte[] K1 = RandomNumberGenerator.GetBytes(32);
    private static readonly byte[] K2 = RandomNumberGenerator.GetBytes(32);
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-relay-").FullName;
    private readonly SocketPairs _pairs;

    public MigrationRelayTests() => _pairs = new SocketPairs(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Source QEMU → PumpOut → (channel bytes, through <paramref name="wire"/>) → PumpIn → destination QEMU.</summary>
    private sealed class Rig : IAsyncDisposable
    {
        public required Socket SourceQemu { get; init; }   // what QEMU writes into
        public required Socket RelayFromQemu { get; init; }
        public required SecureChannel Sending { get; init; }
        public required SecureChannel Receiving { get; init; }
        public required Socket RelayToQemu { get; init; }
        public required Socket DestinationQemu { get; init; } // what QEMU reads from
        public Task Wire { get; init; } = Task.CompletedTask;

        public async ValueTask DisposeAsync()
        {
            foreach (var s in new[] { SourceQemu, RelayFromQemu, RelayToQemu, DestinationQemu })
            {
                s.Dispose();
            }
            await Sending.DisposeAsync();
            await Receiving.DisposeAsync();
        }
    }

    private async Task<Rig> RigAsync(Func<Stream, Stream, Task>? wire = null)
    {
        var (srcQemu, fromQemu) = await _pairs.RawAsync();
        var (toQemu, dstQemu) = await _pairs.RawAsync();
        var (a, b) = await _pairs.StreamsAsync();
        Task wiring = Task.CompletedTask;
        Stream receiveSide = b;
        if (wire is not null)
        {
            var (c, d) = await _pairs.StreamsAsync();
            wiring = Task.Run(() => wire(b, c));
            receiveSide = d;
        }
        var sending = new SecureChannel(a);
        sending.Key(K1, K2);
        var receiving = new SecureChannel(receiveSide);
        receiving.Key(K2, K1);
        return new Rig { SourceQemu = srcQemu, RelayFromQemu = fromQemu, Sending = sending, Receiving = receiving, RelayToQemu = toQemu, DestinationQemu = dstQemu, Wire = wiring };
    }

    /// <summary>Writes <paramref name="data"/> as QEMU would (pieces of varying size), then closes its side.</summary>
    private static Task ProduceAsync(Socket qemu, byte[] data, int seed) => Task.Run(() =>
    {
        var random = new Random(seed);
        int at = 0;
        while (at < data.Length)
        {
            int n = Math.Min(data.Length - at, random.Next(1, 96 * 1024));
            qemu.Send(data, at, n, SocketFlags.None);
            at += n;
        }
        qemu.Shutdown(SocketShutdown.Send);
    });

    private static Task<byte[]> ConsumeAsync(Socket qemu) => Task.Run(() =>
    {
        var got = new MemoryStream();
        var buf = new byte[32 * 1024]; // QEMU reads its stream 32 KiB at a time
        int n;
        while ((n = qemu.Receive(buf)) > 0)
        {
            got.Write(buf, 0, n);
        }
        return got.ToArray();
    });

    [Fact]
    public async Task The_stream_arrives_whole_and_in_order_with_file_records_sent_alongside()
    {
        await using var rig = await RigAsync();
        var data = RandomNumberGenerator.GetBytes((6 << 20) + 12345);
        var filePath = Path.Combine(_dir, "disk.qcow2");
        await File.WriteAllBytesAsync(filePath, new byte[300_000]);
        using var file = new MigrationRelay.IncomingFile(filePath, 300_000, new FileStream(filePath, FileMode.Open, FileAccess.ReadWrite));
        (long Offset, byte[] Bytes)[] pieces = [(0L, RandomNumberGenerator.GetBytes(4096)), (100_000L, RandomNumberGenerator.GetBytes(70_000)), (296_000L, RandomNumberGenerator.GetBytes(4000))];

        var produce = ProduceAsync(rig.SourceQemu, data, seed: 1);
        var consume = ConsumeAsync(rig.DestinationQemu);
        var pumpOut = MigrationRelay.PumpOutAsync(rig.RelayFromQemu, rig.Sending, CancellationToken.None);
        var pumpIn = MigrationRelay.PumpInAsync(rig.Receiving, new NetworkStream(rig.RelayToQemu, ownsSocket: false), [file], CancellationToken.None);
        // The agent sends the disks' last changes on the same channel while the stream still flows.
        foreach (var (offset, bytes) in pieces)
        {
            var record = new byte[10 + bytes.Length];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(record.AsSpan(2), (ulong)offset);
            bytes.CopyTo(record, 10);
            await rig.Sending.SendAsync(FrameType.File, record, CancellationToken.None);
        }
        await produce.WaitAsync(TimeSpan.FromSeconds(60));
        long sent = await pumpOut.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(data.Length, sent);
        await rig.Sending.SendControlAsync(new JsonObject { ["type"] = "stream-end", ["bytes"] = sent }, CancellationToken.None);
        Assert.Equal(data.Length, await pumpIn.WaitAsync(TimeSpan.FromSeconds(60)));
        rig.RelayToQemu.Shutdown(SocketShutdown.Send);
        var arrived = await consume.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(data.AsSpan().SequenceEqual(arrived), "the destination QEMU got other bytes than the source QEMU sent");
        file.Handle.Flush();
        var onDisk = await File.ReadAllBytesAsync(filePath);
        foreach (var (offset, bytes) in pieces)
        {
            Assert.True(bytes.AsSpan().SequenceEqual(onDisk.AsSpan((int)offset, bytes.Length)), $"file piece at {offset}");
        }
    }

    [Fact]
    public async Task A_stream_end_whose_count_differs_from_what_arrived_is_refused()
    {
        await using var rig = await RigAsync();
        var data = RandomNumberGenerator.GetBytes(200_000);
        var produce = ProduceAsync(rig.SourceQemu, data, seed: 2);
        _ = ConsumeAsync(rig.DestinationQemu);
        var pumpIn = MigrationRelay.PumpInAsync(rig.Receiving, new NetworkStream(rig.RelayToQemu, ownsSocket: false), [], CancellationToken.None);
        long sent = await MigrationRelay.PumpOutAsync(rig.RelayFromQemu, rig.Sending, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        await produce;
        await rig.Sending.SendControlAsync(new JsonObject { ["type"] = "stream-end", ["bytes"] = sent + 1 }, CancellationToken.None);
        var e = await Assert.ThrowsAsync<MigrationChannelException>(() => pumpIn.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal("migration.stream.length", e.Id);
    }

    [Theory]
    [InlineData(3)]          // the first record's header
    [InlineData(70_000)]     // inside the first record's bytes
    [InlineData(1_500_000)]  // a later record
    public async Task A_byte_changed_on_the_wire_ends_the_stream_and_no_altered_byte_reaches_qemu(int position)
    {
        await using var rig = await RigAsync(async (from, to) =>
        {
            var buf = new byte[64 * 1024];
            long at = 0;
            int n;
            try
            {
                while ((n = await from.ReadAsync(buf)) > 0)
                {
                    if (position >= at && position < at + n)
                    {
                        buf[position - at] ^= 0x20;
                    }
                    at += n;
                    await to.WriteAsync(buf.AsMemory(0, n));
                }
            }
            catch (IOException)
            {
                // the receiving side closed after refusing the record
            }
            to.Dispose();
        });
        var data = RandomNumberGenerator.GetBytes(3 << 20);
        _ = ProduceAsync(rig.SourceQemu, data, seed: 3);
        var consume = ConsumeAsync(rig.DestinationQemu);
        _ = MigrationRelay.PumpOutAsync(rig.RelayFromQemu, rig.Sending, CancellationToken.None);
        var pumpIn = MigrationRelay.PumpInAsync(rig.Receiving, new NetworkStream(rig.RelayToQemu, ownsSocket: false), [], CancellationToken.None);
        var e = await Assert.ThrowsAsync<MigrationChannelException>(() => pumpIn.WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.True(e.Id is "migration.channel.auth" or "migration.channel.frame", e.Id + ": " + e.Message);
        rig.RelayToQemu.Shutdown(SocketShutdown.Send);
        var got = await consume.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(got.Length < position, $"{got.Length} bytes reached QEMU, past the changed byte at {position} of the wire");
        Assert.True(data.AsSpan(0, got.Length).SequenceEqual(got), "QEMU got bytes the source never sent");
    }

    [Fact]
    public async Task A_peer_silent_longer_than_the_limit_ends_the_stream_as_a_timeout()
    {
        await using var rig = await RigAsync();
        var pumpIn = Task.Run(() => MigrationRelay.PumpIn(rig.Receiving, new NetworkStream(rig.RelayToQemu, ownsSocket: false), [], CancellationToken.None, TimeSpan.FromMilliseconds(300)));
        var e = await Assert.ThrowsAsync<MigrationChannelException>(() => pumpIn.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal("migration.channel.timeout", e.Id);
    }

    [Fact]
    public async Task Cancelling_ends_both_pumps_blocked_on_silent_sockets()
    {
        await using var rig = await RigAsync();
        using var cts = new CancellationTokenSource();
        var pumpOut = MigrationRelay.PumpOutAsync(rig.RelayFromQemu, rig.Sending, cts.Token);  // QEMU says nothing
        var pumpIn = MigrationRelay.PumpInAsync(rig.Receiving, new NetworkStream(rig.RelayToQemu, ownsSocket: false), [], cts.Token); // nor the peer
        await Task.Delay(200);
        Assert.False(pumpOut.IsCompleted || pumpIn.IsCompleted);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pumpOut.WaitAsync(TimeSpan.FromSeconds(30)));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pumpIn.WaitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task Cancelling_while_the_peer_no_longer_reads_ends_the_source_pump()
    {
        await using var rig = await RigAsync();
        using var cts = new CancellationTokenSource();
        // QEMU keeps writing; nobody reads the channel: the sender blocks once the socket buffers are full.
        var data = RandomNumberGenerator.GetBytes(32 << 20);
        _ = Task.Run(() =>
        {
            try
            {
                rig.SourceQemu.Send(data);
            }
            catch (SocketException)
            {
            }
        });
        var pumpOut = MigrationRelay.PumpOutAsync(rig.RelayFromQemu, rig.Sending, cts.Token);
        await Task.Delay(500);
        Assert.False(pumpOut.IsCompleted);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<Exception>(() => pumpOut.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(pumpOut.IsCompleted);
    }

    [Fact]
    public async Task A_destination_qemu_that_went_away_fails_the_stream_with_an_io_error()
    {
        await using var rig = await RigAsync();
        rig.DestinationQemu.Dispose(); // QEMU died before the stream
        var data = RandomNumberGenerator.GetBytes(4 << 20);
        _ = ProduceAsync(rig.SourceQemu, data, seed: 4);
        _ = MigrationRelay.PumpOutAsync(rig.RelayFromQemu, rig.Sending, CancellationToken.None);
        var pumpIn = MigrationRelay.PumpInAsync(rig.Receiving, new NetworkStream(rig.RelayToQemu, ownsSocket: false), [], CancellationToken.None);
        await Assert.ThrowsAsync<IOException>(() => pumpIn.WaitAsync(TimeSpan.FromSeconds(30)));
    }
}

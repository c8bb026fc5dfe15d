using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Rempart.Host.Migration;

namespace Rempart.Host.Tests.Migration;

/// <summary>
/// The migration channel's records (docs/migration.md "Channel"): what one side seals the other
/// opens; every flipped byte, cut, reordering, replay or reflection of the sealed bytes is refused
/// with a stable id and never yields altered data; handshake messages are bounded and parsed strictly.
/// </summary>
public sealed class SecureChannelTests
{
    private static readonly byte[] K1 = RandomNumberGenerator.GetBytes(32);
    private static readonly byte[] K2 = RandomNumberGenerator.GetBytes(32);

    private static readonly (FrameType Type, byte[] Payload)[] Sample =
    [
        (FrameType.Control, System.Text.Encoding.UTF8.GetBytes("""{"type":"confirm","x":1}""")),
        (FrameType.Stream, RandomNumberGenerator.GetBytes(3000)),
        (FrameType.File, [0, 2, 0, 0, 0, 0, 0, 0, 16, 0, .. RandomNumberGenerator.GetBytes(100)]),
        (FrameType.Stream, []),
    ];

    /// <summary>The sealed bytes of <see cref="Sample"/> as the source (send key K1) writes them.</summary>
    private static async Task<byte[]> SealSample()
    {
        var ms = new MemoryStream();
        await using (var c = new SecureChannel(new NonClosing(ms)))
        {
            c.Key(K1, K2);
            foreach (var (type, payload) in Sample)
            {
                await c.SendAsync(type, payload, CancellationToken.None);
            }
        }
        return ms.ToArray();
    }

    /// <summary>Opens records as the destination (receive key K1) until the bytes end or a record is refused.</summary>
    private static async Task<(List<(FrameType, byte[])> Records, MigrationChannelException? Error)> Open(byte[] bytes, bool reflect = false)
    {
        var got = new List<(FrameType, byte[])>();
        await using var c = new SecureChannel(new MemoryStream(bytes));
        if (reflect)
        {
            c.Key(K1, K2); // the sender's own keys: its records reflected back to it
        }
        else
        {
            c.Key(K2, K1);
        }
        try
        {
            for (int i = 0; i < Sample.Length; i++)
            {
                var (t, p) = await c.ReceiveAsync(CancellationToken.None);
                got.Add((t, p.ToArray()));
            }
            return (got, null);
        }
        catch (MigrationChannelException e)
        {
            return (got, e);
        }
    }

    [Fact]
    public async Task Records_round_trip_in_order_with_their_types()
    {
        var (records, error) = await Open(await SealSample());
        Assert.Null(error);
        Assert.Equal(Sample.Select(s => s.Type), records.Select(r => r.Item1));
        for (int i = 0; i < Sample.Length; i++)
        {
            Assert.Equal(Sample[i].Payload, records[i].Item2);
        }
    }

    [Fact]
    public async Task The_sealed_bytes_hold_no_plaintext()
    {
        var sealedBytes = await SealSample();
        var stream = Sample[1].Payload;
        Assert.True(sealedBytes.AsSpan().IndexOf(stream.AsSpan(100, 32)) < 0);
        Assert.True(sealedBytes.AsSpan().IndexOf("confirm"u8) < 0);
    }

    [Fact]
    public async Task Every_flipped_byte_is_refused_and_never_yields_altered_data()
    {
        var sealedBytes = await SealSample();
        for (int i = 0; i < sealedBytes.Length; i++)
        {
            var damaged = (byte[])sealedBytes.Clone();
            damaged[i] ^= 0x01;
            var (records, error) = await Open(damaged);
            Assert.NotNull(error);
            Assert.Contains(error!.Id, new[] { "migration.channel.auth", "migration.channel.frame", "migration.channel.closed" });
            // Whatever came out before the refusal is exactly what was sent.
            for (int r = 0; r < records.Count; r++)
            {
                Assert.Equal(Sample[r].Payload, records[r].Item2);
            }
        }
    }

    [Fact]
    public async Task Every_cut_is_seen_as_a_closed_channel_not_as_an_end()
    {
        var sealedBytes = await SealSample();
        for (int cut = 0; cut < sealedBytes.Length; cut++)
        {
            var (records, error) = await Open(sealedBytes[..cut]);
            Assert.NotNull(error);
            Assert.Equal("migration.channel.closed", error!.Id);
            Assert.True(records.Count < Sample.Length);
        }
    }

    [Fact]
    public async Task Reordered_replayed_or_reflected_records_are_refused()
    {
        var sealedBytes = await SealSample();
        var bounds = RecordBounds(sealedBytes);
        byte[] Swap(int a, int b) => [.. bounds.Select((r, i) => i == a ? bounds[b] : i == b ? bounds[a] : r).SelectMany(r => sealedBytes[r.Start..r.End])];
        var swapped = await Open(Swap(0, 1));
        Assert.Equal("migration.channel.auth", swapped.Error?.Id);
        Assert.Empty(swapped.Records);
        var replayed = await Open([.. sealedBytes[bounds[0].Start..bounds[0].End], .. sealedBytes[bounds[0].Start..bounds[0].End]]);
        Assert.Single(replayed.Records);
        Assert.Equal("migration.channel.auth", replayed.Error?.Id);
        var reflected = await Open(sealedBytes, reflect: true);
        Assert.Equal("migration.channel.auth", reflected.Error?.Id);
        Assert.Empty(reflected.Records);
    }

    [Fact]
    public async Task Handshake_messages_are_bounded_and_must_be_JSON_objects()
    {
        async Task<string> Fails(byte[] bytes)
        {
            await using var c = new SecureChannel(new MemoryStream(bytes));
            return (await Assert.ThrowsAsync<MigrationChannelException>(() => c.ReceiveHandshakeAsync(CancellationToken.None))).Id;
        }
        Assert.Equal("migration.channel.frame", await Fails([0x7f, 0xff, 0xff, 0xff]));
        Assert.Equal("migration.channel.frame", await Fails([0, 0, 0, 0]));
        Assert.Equal("migration.channel.message", await Fails([0, 0, 0, 3, (byte)'[', (byte)'1', (byte)']']));
        Assert.Equal("migration.channel.message", await Fails([0, 0, 0, 2, 0xff, 0xfe]));
        Assert.Equal("migration.channel.closed", await Fails([0, 0, 0, 9, (byte)'{']));

        var ms = new MemoryStream();
        await using (var w = new SecureChannel(new NonClosing(ms)))
        {
            await w.SendHandshakeAsync(new JsonObject { ["type"] = "hello", ["n"] = 1 }, CancellationToken.None);
        }
        await using var r = new SecureChannel(new MemoryStream(ms.ToArray()));
        Assert.Equal(1, SecureChannel.Expect(await r.ReceiveHandshakeAsync(CancellationToken.None), "hello")["n"]!.GetValue<int>());
    }

    [Fact]
    public void A_peer_error_becomes_an_exception_with_its_id_and_cleaned_text()
    {
        var e = Assert.Throws<MigrationChannelException>(() => SecureChannel.Expect(
            new JsonObject { ["type"] = "error", ["id"] = "release.host.not-healthy", ["message"] = "host is stale\u001b[31m" }, "accept"));
        Assert.Equal("release.host.not-healthy", e.Id);
        Assert.DoesNotContain('\u001b', e.Message);
        Assert.Equal("migration.channel.unexpected", Assert.Throws<MigrationChannelException>(() => SecureChannel.Expect(new JsonObject { ["type"] = "ready" }, "accept")).Id);
        Assert.Equal("migration.channel.unexpected", Assert.Throws<MigrationChannelException>(() => SecureChannel.Expect(new JsonObject(), "accept")).Id);
    }

    [Fact]
    public async Task Records_are_sealed_only_after_keying_and_keys_are_set_once()
    {
        await using var c = new SecureChannel(new MemoryStream());
        await Assert.ThrowsAsync<InvalidOperationException>(() => c.SendAsync(FrameType.Stream, new byte[1], CancellationToken.None));
        c.Key(K1, K2);
        Assert.Throws<InvalidOperationException>(() => c.Key(K1, K2));
        await Assert.ThrowsAsync<InvalidOperationException>(() => c.SendHandshakeAsync(new JsonObject(), CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => c.SendAsync(FrameType.Stream, new byte[SecureChannel.MaxRecord + 1], CancellationToken.None));
    }

    /// <summary>Record boundaries from the headers (type, u32 sealed length).</summary>
    private static List<(int Start, int End)> RecordBounds(byte[] sealedBytes)
    {
        var list = new List<(int, int)>();
        for (int i = 0; i < sealedBytes.Length;)
        {
            int n = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(sealedBytes.AsSpan(i + 1));
            list.Add((i, i + 5 + n));
            i += 5 + n;
        }
        return list;
    }

    /// <summary>Keeps the MemoryStream readable after the channel disposes its stream.</summary>
    private sealed class NonClosing(Stream inner) : Stream
    {
        public override bool CanRead => inner.CanRead;
        public override bool CanSeek => false;
        public override bool CanWrite => inner.CanWrite;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => inner.Position = value; }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);
        protected override void Dispose(bool disposing)
        {
        }
    }
}

using Rempart.Host.Snapshots;
using Rempart.KeyProtection;
using static Rempart.Host.Tests.Snapshots.SnapshotTestStreams;

namespace Rempart.Host.Tests.Snapshots;

/// <summary>The sealed snapshot stream (docs/snapshot-format.md): round trips, secrecy, restore's two passes.</summary>
public sealed class SnapshotStreamTests : IDisposable
{
    private const int Chunk = 64;
    private readonly VmMasterKey _vmk = NewVmk();

    public void Dispose() => _vmk.Dispose();

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(Chunk - 1)]
    [InlineData(Chunk)]
    [InlineData(Chunk + 1)]
    [InlineData(3 * Chunk)]
    [InlineData(5 * Chunk + 17)]
    public async Task Round_trips_of_every_size_around_the_chunk_size(int size)
    {
        using var key = Key(_vmk);
        var plaintext = Random(size);
        var sealedBytes = await Seal(plaintext, key, Chunk);
        // Data records of exactly one chunk, then a final record of 0 .. chunk-1 bytes (empty when the size is a multiple).
        var records = Records(sealedBytes);
        Assert.Equal(size / Chunk + 1, records.Count);
        Assert.All(records[..^1], r => Assert.Equal(Chunk + 21, r.Length));
        Assert.Equal(size % Chunk + 21, records[^1].Length);
        Assert.Equal([.. Enumerable.Repeat(0, records.Count - 1), 1], records.Select(r => (int)sealedBytes[r.Offset]));
        Assert.Equal(plaintext, await Open(sealedBytes, key));
    }

    [Fact]
    public async Task A_stream_of_several_default_chunks_round_trips()
    {
        using var key = Key(_vmk);
        var plaintext = Random((5 << 20) / 2 + 3);
        var sealedBytes = await Seal(plaintext, key, SnapshotHeader.DefaultChunkSize);
        var info = await SnapshotStream.VerifyAsync(new MemoryStream(sealedBytes), key);
        Assert.Equal(3, info.Chunks);
        Assert.Equal(SnapshotHeader.DefaultChunkSize, info.Header.ChunkSize);
        Assert.Equal(("vm-test-1", "snap-1"), (info.Header.VmId, info.Header.SnapshotId));
        Assert.Equal(plaintext, await Open(sealedBytes, key));
        // The fingerprint names this sealed stream: the same after a verify, another for the same bytes sealed again.
        var sealedInfo = await SnapshotStream.SealAsync(new MemoryStream(plaintext), Stream.Null, key);
        Assert.Matches("^[0-9a-f]{64}$", info.Header.Fingerprint);
        Assert.NotEqual(info.Header.Fingerprint, sealedInfo.Header.Fingerprint);
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(sealedBytes.AsSpan(0, info.Header.Length))), info.Header.Fingerprint);
    }

    [Fact]
    public async Task The_sealed_bytes_show_nothing_of_a_marker_in_the_plaintext()
    {
        using var key = Key(_vmk);
        var marker = "REMPART-RAM-MARKER-7f3a9c"u8.ToArray();
        var plaintext = new byte[64 << 10];
        for (int i = 0; i < plaintext.Length - marker.Length; i += 100)
        {
            marker.CopyTo(plaintext, i);
        }
        var sealedBytes = await Seal(plaintext, key, 4096);
        Assert.False(VmTestKeysContains(sealedBytes, marker[..8]));
        Assert.False(VmTestKeysContains(sealedBytes, marker[^8..]));
        // Zero runs in the plaintext do not show as zero runs either (a per-chunk nonce, not ECB-like patterns).
        Assert.False(VmTestKeysContains(sealedBytes.AsSpan(200), new byte[16]));
        // Two seals of the same bytes under the same key share nothing (a fresh salt per stream).
        var again = await Seal(plaintext, key, 4096);
        Assert.False(VmTestKeysContains(again, sealedBytes.AsSpan(4000, 16)));
        Assert.Equal(plaintext, await Open(sealedBytes, key));
    }

    [Fact]
    public async Task A_seal_cut_short_by_a_failing_source_leaves_a_stream_that_is_refused_as_truncated()
    {
        using var key = Key(_vmk);
        var output = new MemoryStream();
        var source = new FailingStream(new MemoryStream(Random(10 * Chunk)), failAfter: 5 * Chunk + 3);
        await Assert.ThrowsAsync<IOException>(() => SnapshotStream.SealAsync(source, output, key, Chunk));
        var partial = output.ToArray();
        Assert.Equal(SnapshotException.Truncated, (await Refused(partial, key)).Id);
    }

    [Fact]
    public async Task A_failing_destination_stops_the_seal_with_its_error()
    {
        using var key = Key(_vmk);
        var destination = new FailingStream(new MemoryStream(), failAfter: 3 * Chunk);
        await Assert.ThrowsAsync<IOException>(() => SnapshotStream.SealAsync(new MemoryStream(Random(20 * Chunk)), destination, key, Chunk));
    }

    [Fact]
    public async Task A_file_changed_between_the_verify_pass_and_the_restore_pass_is_caught_and_only_authentic_bytes_were_released()
    {
        using var key = Key(_vmk);
        var plaintext = Random(8 * Chunk + 5);
        var sealedBytes = await Seal(plaintext, key, Chunk);
        var records = Records(sealedBytes);
        var changed = (byte[])sealedBytes.Clone();
        changed[records[5].Offset + 10] ^= 0x40;
        var destination = new MemoryStream();
        var e = await Assert.ThrowsAsync<SnapshotException>(() =>
            SnapshotStream.RestoreAsync(new SwappingStream(sealedBytes, changed), key, destination));
        Assert.Equal(SnapshotException.Changed, e.Id);
        Assert.Equal(SnapshotException.Tampered, Assert.IsType<SnapshotException>(e.InnerException).Id);
        Assert.Equal(5, e.Chunk);
        // What reached the destination is a prefix of the plaintext, whole chunks, and nothing of chunk 5.
        var got = destination.ToArray();
        Assert.True(got.Length <= 5 * Chunk && got.Length % Chunk == 0);
        Assert.Equal(plaintext[..got.Length], got);
    }

    [Fact]
    public async Task A_restore_pass_that_finds_another_valid_stream_of_the_same_snapshot_is_caught()
    {
        using var key = Key(_vmk);
        var first = await Seal(Random(3 * Chunk), key, Chunk);
        var second = await Seal(Random(3 * Chunk), key, Chunk);
        var destination = new MemoryStream();
        var e = await Assert.ThrowsAsync<SnapshotException>(() => SnapshotStream.RestoreAsync(new SwappingStream(first, second), key, destination));
        Assert.Equal(SnapshotException.Changed, e.Id);
        Assert.Equal(0, destination.Length);
    }

    [Fact]
    public async Task A_cancelled_seal_stops_and_leaves_a_stream_that_is_refused()
    {
        using var key = Key(_vmk);
        using var cts = new CancellationTokenSource();
        var output = new MemoryStream();
        var source = new FailingStream(new MemoryStream(Random(50 * Chunk)), failAfter: long.MaxValue) { OnRead = n => { if (n > 10 * Chunk) { cts.Cancel(); } } };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => SnapshotStream.SealAsync(source, output, key, Chunk, cts.Token));
        Assert.Equal(SnapshotException.Truncated, (await Refused(output.ToArray(), key)).Id);
    }

    [Fact]
    public async Task A_restore_needs_a_seekable_stream()
    {
        using var key = Key(_vmk);
        var sealedBytes = await Seal(Random(10), key, Chunk);
        var pipeLike = new FailingStream(new MemoryStream(sealedBytes), failAfter: long.MaxValue);
        await Assert.ThrowsAsync<ArgumentException>(() => SnapshotStream.RestoreAsync(pipeLike, key, new MemoryStream()));
    }

    [Fact]
    public async Task Keys_are_per_snapshot_and_refuse_bad_ids()
    {
        using var a = Key(_vmk, snapshotId: "a");
        using var b = Key(_vmk, snapshotId: "b");
        Assert.NotEqual(a.Bytes.ToArray(), b.Bytes.ToArray());
        Assert.Equal(_vmk.Derive(VmKeys.Snapshot("a")), a.Bytes.ToArray());
        Assert.Throws<ArgumentException>(() => SnapshotKey.Derive(_vmk, "vm-test-1", "../x"));
        Assert.Throws<ArgumentException>(() => SnapshotKey.Derive(_vmk, "", "a"));
        Assert.DoesNotContain(Convert.ToHexString(a.Bytes), a.ToString(), StringComparison.OrdinalIgnoreCase);
        a.Dispose();
        Assert.Throws<ObjectDisposedException>(() => a.Bytes.Length);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => SnapshotStream.SealAsync(new MemoryStream(), new MemoryStream(), b, chunkSize: 63));
    }

    private static bool VmTestKeysContains(ReadOnlySpan<byte> haystack, ReadOnlySpan<byte> needle) => haystack.IndexOf(needle) >= 0;

    /// <summary>A source or sink that throws IOException once <c>failAfter</c> bytes have gone through.</summary>
    private sealed class FailingStream(Stream inner, long failAfter) : Stream
    {
        private long _done;

        public Action<long>? OnRead { get; init; }

        public override bool CanRead => inner.CanRead;

        public override bool CanSeek => false;

        public override bool CanWrite => inner.CanWrite;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush() => inner.Flush();

        public override int Read(byte[] buffer, int offset, int count)
        {
            if (_done >= failAfter)
            {
                throw new IOException("source failed");
            }
            int n = inner.Read(buffer, offset, (int)Math.Min(count, failAfter - _done));
            _done += n;
            OnRead?.Invoke(_done);
            return n;
        }

        public override void Write(byte[] buffer, int offset, int count)
        {
            _done += count;
            if (_done > failAfter)
            {
                throw new IOException("sink failed");
            }
            inner.Write(buffer, offset, count);
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }

    /// <summary>A seekable stream that serves <c>first</c> until it is rewound, then <c>second</c>: a file changed between two passes.</summary>
    private sealed class SwappingStream(byte[] first, byte[] second) : MemoryStream(first)
    {
        private MemoryStream? _second;

        public override long Position
        {
            get => _second?.Position ?? base.Position;
            set
            {
                if (_second is null && value == 0 && base.Position > 0)
                {
                    _second = new MemoryStream(second);
                }
                if (_second is not null)
                {
                    _second.Position = value;
                }
                else
                {
                    base.Position = value;
                }
            }
        }

        public override int Read(byte[] buffer, int offset, int count) => _second?.Read(buffer, offset, count) ?? base.Read(buffer, offset, count);

        public override int Read(Span<byte> buffer) => _second?.Read(buffer) ?? base.Read(buffer);

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            _second?.ReadAsync(buffer, cancellationToken) ?? base.ReadAsync(buffer, cancellationToken);

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            _second?.ReadAsync(buffer, offset, count, cancellationToken) ?? base.ReadAsync(buffer, offset, count, cancellationToken);
    }
}

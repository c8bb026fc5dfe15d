using System.IO.Pipes;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Rempart.Host.Snapshots;
using Rempart.KeyProtection;
using static Rempart.Host.Tests.Snapshots.SnapshotTestStreams;

namespace Rempart.Host.Tests.Snapshots;

/// <summary>Alone, so the process's allocation counter measures only this test.</summary>
[CollectionDefinition(nameof(SnapshotMemoryCollection), DisableParallelization = true)]
public sealed class SnapshotMemoryCollection;

[Collection(nameof(SnapshotMemoryCollection))]
public sealed class SnapshotMemoryTests : IDisposable
{
    private const long Size = 128L << 20;
    private readonly VmMasterKey _vmk = NewVmk();

    public void Dispose() => _vmk.Dispose();

    [Fact]
    public async Task A_large_stream_goes_through_a_pipe_sealed_and_opened_in_bounded_memory()
    {
        using var key = Key(_vmk);
        var source = new PatternStream(Size);
        var sink = new HashingSink();
        using var pipeOut = new AnonymousPipeServerStream(PipeDirection.Out);
        using var pipeIn = new AnonymousPipeClientStream(PipeDirection.In, pipeOut.ClientSafePipeHandle);
        long before = GC.GetTotalAllocatedBytes(precise: true);
        var seal = Task.Run(async () =>
        {
            try
            {
                return await SnapshotStream.SealAsync(source, pipeOut, key);
            }
            finally
            {
                pipeOut.Dispose();
            }
        });
        var opened = await SnapshotStream.OpenAsync(pipeIn, key, sink);
        var sealedInfo = await seal;
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;

        Assert.Equal(Size, opened.PlaintextLength);
        Assert.Equal(sealedInfo.SealedLength, opened.SealedLength);
        Assert.Equal(Size / SnapshotHeader.DefaultChunkSize + 1, opened.Chunks);
        Assert.Equal(source.Hash(), sink.Hash());
        // Two pipelines of 4 one-MiB buffers, and small change: nowhere near the 128 MiB that went through.
        Assert.True(allocated < 16L << 20, $"{allocated:N0} bytes allocated to stream {Size:N0} bytes");
    }

    /// <summary><c>length</c> bytes of a cheap non-repeating pattern (each 8 bytes: their own offset, mixed), hashed as read.</summary>
    private sealed class PatternStream(long length) : Stream
    {
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private long _position;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => length;

        public override long Position { get => _position; set => throw new NotSupportedException(); }

        public byte[] Hash() => _hash.GetHashAndReset();

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            int n = (int)Math.Min(buffer.Length & ~7, length - _position);
            var words = MemoryMarshal.Cast<byte, ulong>(buffer[..n]);
            for (int i = 0; i < words.Length; i++)
            {
                ulong x = (ulong)(_position + 8 * i);
                words[i] = x * 0x9E3779B97F4A7C15UL ^ (x >> 17);
            }
            _hash.AppendData(buffer[..n]);
            _position += n;
            return n;
        }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(Read(buffer.Span));

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    private sealed class HashingSink : Stream
    {
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public byte[] Hash() => _hash.GetHashAndReset();

        public override void Write(byte[] buffer, int offset, int count) => _hash.AppendData(buffer, offset, count);

        public override void Write(ReadOnlySpan<byte> buffer) => _hash.AppendData(buffer);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            _hash.AppendData(buffer.Span);
            return ValueTask.CompletedTask;
        }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }
}

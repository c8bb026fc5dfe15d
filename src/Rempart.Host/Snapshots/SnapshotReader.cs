using System.Security.Cryptography;

namespace Rempart.Host.Snapshots;

/// <summary>
/// A read-only stream of the plaintext of a sealed snapshot stream, pulled one record at a time (one
/// chunk-sized buffer). Each chunk is authenticated before any of its bytes is returned; a fault throws
/// <see cref="SnapshotException"/> from <see cref="Read(Span{byte})"/>. <c>Read</c> returns 0 only after
/// the final record has authenticated and nothing follows it, so a reader that reaches the end has the
/// whole, untouched stream. Like <see cref="SnapshotStream.OpenAsync"/>, bytes of the chunks before a fault
/// have been returned by then; to release nothing from a bad file, verify it first.
/// </summary>
public sealed class SnapshotReader : Stream
{
    private readonly Stream _source;
    private readonly bool _leaveOpen;
    private readonly StreamCipher _cipher;
    private readonly byte[] _record;
    private readonly byte[] _probe = new byte[1];
    private int _position;
    private int _end;
    private long _index;
    private long _offset;
    private bool _final;
    private bool _disposed;
    private SnapshotException? _failure;

    /// <summary>Reads and authenticates the header now (<c>snapshot.format</c>, <c>snapshot.wrong-vm</c>, …).</summary>
    public SnapshotReader(Stream source, SnapshotKey key, bool leaveOpen = false)
    {
        _source = source;
        _leaveOpen = leaveOpen;
        try
        {
            Header = SnapshotHeader.Read(source);
            _cipher = StreamCipher.Open(key, Header);
        }
        catch when (!leaveOpen)
        {
            source.Dispose();
            throw;
        }
        _record = new byte[Header.ChunkSize + SnapshotRecord.Overhead];
        _offset = Header.Length;
    }

    /// <summary>The stream's header, authenticated.</summary>
    public SnapshotHeader Header { get; }

    public override bool CanRead => !_disposed;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        while (_position == _end)
        {
            if (_final || buffer.IsEmpty)
            {
                return 0;
            }
            if (_failure is not null)
            {
                // A refused stream stays refused: no reading on past the fault.
                throw new SnapshotException(_failure.Id, _failure.Message, _failure.Chunk, _failure.Offset, _failure);
            }
            try
            {
                Next();
            }
            catch (SnapshotException e)
            {
                _failure = e;
                throw;
            }
        }
        int n = Math.Min(buffer.Length, _end - _position);
        _record.AsSpan(_position, n).CopyTo(buffer);
        _position += n;
        return n;
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing && !_disposed)
        {
            _disposed = true;
            CryptographicOperations.ZeroMemory(_record);
            _cipher.Dispose();
            if (!_leaveOpen)
            {
                _source.Dispose();
            }
        }
        base.Dispose(disposing);
    }

    private void Next()
    {
        _position = _end = 0;
        var prefix = _record.AsSpan(0, SnapshotRecord.PrefixSize);
        int got = _source.ReadAtLeast(prefix, prefix.Length, throwOnEndOfStream: false);
        if (got < prefix.Length)
        {
            throw SnapshotRecord.Truncated(_index, _offset + got, got == 0 ? "with no final record: nothing where there should be" : "inside the prefix of");
        }
        int length = SnapshotRecord.Length(prefix, Header.ChunkSize, _index, _offset, out bool final);
        var rest = _record.AsSpan(SnapshotRecord.PrefixSize, length - SnapshotRecord.PrefixSize);
        got = _source.ReadAtLeast(rest, rest.Length, throwOnEndOfStream: false);
        if (got < rest.Length)
        {
            throw SnapshotRecord.Truncated(_index, _offset + SnapshotRecord.PrefixSize + got, "inside");
        }
        if (final && _source.Read(_probe) > 0)
        {
            throw SnapshotRecord.Trailing(_index, _offset + length);
        }
        _cipher.OpenChunk(_index, _record.AsSpan(0, length), _offset);
        _index++;
        _offset += length;
        _final = final;
        _position = SnapshotRecord.PrefixSize;
        _end = length - StreamCipher.TagSize;
    }
}

using System.Security.Cryptography;

namespace Rempart.Guardian.Ops;

/// <summary>
/// A write-only stream that passes everything to the response body and keeps a copy of the
/// first <c>limit</c> bytes, so a verdict can be read after the endpoint answered. The copy may
/// hold a health token: <see cref="Dispose(bool)"/> zeroes it.
/// </summary>
internal sealed class CapturingStream(Stream inner, int limit) : Stream
{
    private byte[] _buffer = new byte[Math.Min(limit, 4096)];
    private int _length;

    /// <summary>False when the body was longer than the limit (the copy is then incomplete).</summary>
    public bool Complete { get; private set; } = true;

    public ReadOnlySpan<byte> Captured => _buffer.AsSpan(0, _length);

    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        Keep(buffer);
        inner.Write(buffer);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Keep(buffer.Span);
        return inner.WriteAsync(buffer, cancellationToken);
    }

    public override void Flush() => inner.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        // The inner stream is the response's: not ours to close.
        CryptographicOperations.ZeroMemory(_buffer);
        _length = 0;
        base.Dispose(disposing);
    }

    private void Keep(ReadOnlySpan<byte> data)
    {
        if (_length + data.Length > limit)
        {
            Complete = false;
            data = data[..(limit - _length)];
        }
        if (_length + data.Length > _buffer.Length)
        {
            var bigger = new byte[Math.Min(limit, Math.Max(_buffer.Length * 2, _length + data.Length))];
            _buffer.AsSpan(0, _length).CopyTo(bigger);
            CryptographicOperations.ZeroMemory(_buffer);
            _buffer = bigger;
        }
        data.CopyTo(_buffer.AsSpan(_length));
        _length += data.Length;
    }
}

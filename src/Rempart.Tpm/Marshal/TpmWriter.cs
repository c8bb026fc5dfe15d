using System.Buffers.Binary;

namespace Rempart.Tpm.Marshal;

/// <summary>
/// Big-endian writer for the canonical TPM marshalling (TPM 2.0 Library Part 1, §9).
/// Grows as needed; <see cref="ToArray"/> returns the bytes written.
/// </summary>
public sealed class TpmWriter
{
    private byte[] _buffer;
    private int _length;

    public TpmWriter(int capacity = 256) => _buffer = new byte[Math.Max(16, capacity)];

    public int Length => _length;

    public ReadOnlySpan<byte> Written => _buffer.AsSpan(0, _length);

    private Span<byte> Grow(int count)
    {
        if (_length + count > _buffer.Length)
        {
            Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _length + count));
        }
        var s = _buffer.AsSpan(_length, count);
        _length += count;
        return s;
    }

    public TpmWriter WriteByte(byte value)
    {
        Grow(1)[0] = value;
        return this;
    }

    public TpmWriter WriteUInt16(ushort value)
    {
        BinaryPrimitives.WriteUInt16BigEndian(Grow(2), value);
        return this;
    }

    public TpmWriter WriteUInt32(uint value)
    {
        BinaryPrimitives.WriteUInt32BigEndian(Grow(4), value);
        return this;
    }

    public TpmWriter WriteUInt64(ulong value)
    {
        BinaryPrimitives.WriteUInt64BigEndian(Grow(8), value);
        return this;
    }

    public TpmWriter WriteBytes(ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(Grow(bytes.Length));
        return this;
    }

    /// <summary>Writes a TPM2B_: UINT16 size then the bytes.</summary>
    public TpmWriter WriteSized(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length > ushort.MaxValue)
        {
            throw new ArgumentException("a TPM2B_ buffer holds at most 65535 bytes", nameof(bytes));
        }
        WriteUInt16((ushort)bytes.Length);
        return WriteBytes(bytes);
    }

    /// <summary>Writes a TPM2B_ around a structure: the size is patched after <paramref name="body"/> runs.</summary>
    public TpmWriter WriteSized(Action<TpmWriter> body)
    {
        int at = _length;
        WriteUInt16(0);
        body(this);
        int size = _length - at - 2;
        if (size > ushort.MaxValue)
        {
            throw new ArgumentException("a TPM2B_ structure holds at most 65535 bytes");
        }
        BinaryPrimitives.WriteUInt16BigEndian(_buffer.AsSpan(at, 2), (ushort)size);
        return this;
    }

    /// <summary>Overwrites a UINT32 at a position already written (command size fields).</summary>
    public void PatchUInt32(int position, uint value) =>
        BinaryPrimitives.WriteUInt32BigEndian(_buffer.AsSpan(position, 4), value);

    public byte[] ToArray() => _buffer.AsSpan(0, _length).ToArray();

    /// <summary>Zeroes the internal buffer (used when it held secrets).</summary>
    public void Clear()
    {
        Array.Clear(_buffer);
        _length = 0;
    }
}

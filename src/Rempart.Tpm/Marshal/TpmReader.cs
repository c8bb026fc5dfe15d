using System.Buffers.Binary;

namespace Rempart.Tpm.Marshal;

/// <summary>
/// Big-endian reader over a span, following the canonical marshalling of TPM 2.0 Library
/// Part 1, §9 (integers are big-endian, TPM2B_ buffers are a UINT16 size then bytes).
/// Every length is checked against what remains before anything is sliced or allocated;
/// any shortfall throws <see cref="TpmFormatException"/> with the offset.
/// </summary>
public ref struct TpmReader
{
    private readonly ReadOnlySpan<byte> _buffer;
    private readonly int _base;
    private int _pos;

    public TpmReader(ReadOnlySpan<byte> buffer, int baseOffset = 0)
    {
        _buffer = buffer;
        _base = baseOffset;
        _pos = 0;
    }

    /// <summary>Absolute offset of the next byte (relative to the outermost buffer).</summary>
    public readonly int Offset => _base + _pos;

    public readonly int Remaining => _buffer.Length - _pos;

    public readonly bool AtEnd => _pos == _buffer.Length;

    public readonly TpmFormatException Error(string expected) => new(Offset, expected);

    private ReadOnlySpan<byte> Take(int count, string what)
    {
        if (count < 0 || count > Remaining)
        {
            throw Error($"{what} ({count} bytes, {Remaining} remain)");
        }
        var s = _buffer.Slice(_pos, count);
        _pos += count;
        return s;
    }

    public byte ReadByte(string what = "UINT8") => Take(1, what)[0];

    public ushort ReadUInt16(string what = "UINT16") => BinaryPrimitives.ReadUInt16BigEndian(Take(2, what));

    public uint ReadUInt32(string what = "UINT32") => BinaryPrimitives.ReadUInt32BigEndian(Take(4, what));

    public ulong ReadUInt64(string what = "UINT64") => BinaryPrimitives.ReadUInt64BigEndian(Take(8, what));

    public int ReadInt32(string what = "INT32") => BinaryPrimitives.ReadInt32BigEndian(Take(4, what));

    public ReadOnlySpan<byte> ReadSpan(int count, string what) => Take(count, what);

    public byte[] ReadBytes(int count, string what) => Take(count, what).ToArray();

    /// <summary>Reads a TPM2B_: UINT16 size, then that many bytes, at most <paramref name="max"/>.</summary>
    public byte[] ReadSized(string what, int max = ushort.MaxValue)
    {
        int at = Offset;
        ushort size = ReadUInt16($"{what}.size");
        if (size > max)
        {
            throw new TpmFormatException(at, $"{what}.size at most {max} (got {size})");
        }
        return ReadBytes(size, what);
    }

    /// <summary>
    /// Reads a TPM2B_ that wraps a structure (TPM2B_PUBLIC, TPM2B_ATTEST, …): returns a
    /// reader over exactly its contents, so trailing bytes inside it can be rejected.
    /// </summary>
    public TpmReader ReadSizedReader(string what, int max = ushort.MaxValue)
    {
        int at = Offset;
        ushort size = ReadUInt16($"{what}.size");
        if (size > max)
        {
            throw new TpmFormatException(at, $"{what}.size at most {max} (got {size})");
        }
        int start = Offset;
        return new TpmReader(Take(size, what), start);
    }

    /// <summary>Reads a UINT32 size then a reader over exactly that many bytes (the response parameterSize area).</summary>
    public TpmReader ReadSizedReader32(string what)
    {
        int at = Offset;
        uint size = ReadUInt32(what);
        if (size > (uint)Remaining)
        {
            throw new TpmFormatException(at, $"{what} at most {Remaining} (got {size})");
        }
        int start = Offset;
        return new TpmReader(Take((int)size, what), start);
    }

    /// <summary>Reads a UINT32 count and checks it against a maximum before any allocation.</summary>
    public int ReadCount(string what, int max)
    {
        int at = Offset;
        uint count = ReadUInt32($"{what}.count");
        if (count > (uint)max)
        {
            throw new TpmFormatException(at, $"{what}.count at most {max} (got {count})");
        }
        return (int)count;
    }

    /// <summary>Throws unless every byte was consumed (trailing bytes inside a sized buffer are an error).</summary>
    public readonly void ExpectEnd(string what)
    {
        if (!AtEnd)
        {
            throw Error($"end of {what} ({Remaining} trailing bytes)");
        }
    }

    public ReadOnlySpan<byte> ReadRest() => Take(Remaining, "rest");
}

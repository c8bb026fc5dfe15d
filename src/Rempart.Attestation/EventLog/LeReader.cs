using System.Buffers.Binary;

namespace Rempart.Attestation.EventLog;

/// <summary>
/// Little-endian reader over event log bytes (TCG logs are little-endian, PFP §10.2). Every
/// length is checked against what remains before slicing; slices share the log's memory, so
/// an event claiming a huge size allocates nothing. Errors are <see cref="EventLogFormatException"/>.
/// </summary>
public struct LeReader
{
    private readonly ReadOnlyMemory<byte> _buffer;
    private readonly long _base;
    private int _pos;

    public LeReader(ReadOnlyMemory<byte> buffer, long baseOffset = 0)
    {
        _buffer = buffer;
        _base = baseOffset;
        _pos = 0;
    }

    public readonly long Offset => _base + _pos;

    public readonly int Position => _pos;

    public readonly int Remaining => _buffer.Length - _pos;

    public readonly bool AtEnd => _pos >= _buffer.Length;

    public readonly EventLogFormatException Error(string expected) => new(Offset, expected);

    public ReadOnlyMemory<byte> Take(long count, string what)
    {
        if (count < 0 || count > Remaining)
        {
            throw Error($"{what} ({count} bytes, {Remaining} remain)");
        }
        var m = _buffer.Slice(_pos, (int)count);
        _pos += (int)count;
        return m;
    }

    public byte U8(string what) => Take(1, what).Span[0];

    public ushort U16(string what) => BinaryPrimitives.ReadUInt16LittleEndian(Take(2, what).Span);

    public uint U32(string what) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, what).Span);

    public ulong U64(string what) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, what).Span);

    public Guid Guid(string what) => new(Take(16, what).Span);

    public readonly ReadOnlySpan<byte> Rest => _buffer.Span[_pos..];

    public readonly LeReader Sub(ReadOnlyMemory<byte> slice, long at) => new(slice, at);
}

using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace Rempart.KeyProtection;

/// <summary>
/// The canonical binary encoding that digests, MACs and signatures are computed over
/// (docs/key-protector.md, "Canonical encoding"): each text is u32be(length) || UTF-8, each byte
/// string u32be(length) || bytes, integers big-endian. Unambiguous by construction, independent of
/// how the JSON happens to be written.
/// </summary>
internal sealed class Canonical
{
    private readonly ArrayBufferWriter<byte> _buffer = new(512);

    public Canonical Text(string s)
    {
        int n = Encoding.UTF8.GetByteCount(s);
        U32((uint)n);
        Encoding.UTF8.GetBytes(s, _buffer.GetSpan(n));
        _buffer.Advance(n);
        return this;
    }

    public Canonical Bytes(ReadOnlySpan<byte> b)
    {
        U32((uint)b.Length);
        _buffer.Write(b);
        return this;
    }

    public Canonical U8(byte v)
    {
        _buffer.Write([v]);
        return this;
    }

    public Canonical U32(uint v)
    {
        BinaryPrimitives.WriteUInt32BigEndian(_buffer.GetSpan(4), v);
        _buffer.Advance(4);
        return this;
    }

    public Canonical I64(long v)
    {
        BinaryPrimitives.WriteInt64BigEndian(_buffer.GetSpan(8), v);
        _buffer.Advance(8);
        return this;
    }

    public ReadOnlySpan<byte> Span => _buffer.WrittenSpan;

    public byte[] ToArray() => _buffer.WrittenSpan.ToArray();
}

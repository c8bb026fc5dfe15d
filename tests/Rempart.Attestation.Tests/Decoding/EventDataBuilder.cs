using System.Buffers.Binary;
using System.Text;

namespace Rempart.Attestation.Tests.Decoding;

/// <summary>Builds little-endian event data for the decoder tests, field by field as the specs lay them out.</summary>
public sealed class EventDataBuilder
{
    private readonly List<byte> _bytes = [];

    public EventDataBuilder U8(int v)
    {
        _bytes.Add((byte)v);
        return this;
    }

    public EventDataBuilder U16(int v) => Raw(LittleEndian(2, (ulong)v));

    public EventDataBuilder U32(uint v) => Raw(LittleEndian(4, v));

    public EventDataBuilder U64(ulong v) => Raw(LittleEndian(8, v));

    public EventDataBuilder Guid(string g) => Raw(new Guid(g).ToByteArray());

    /// <summary>UTF-16LE code units, without a terminator.</summary>
    public EventDataBuilder Utf16(string s) => Raw(Encoding.Unicode.GetBytes(s));

    public EventDataBuilder Ascii(string s) => Raw(Encoding.ASCII.GetBytes(s));

    public EventDataBuilder Hex(string hex) => Raw(Convert.FromHexString(hex));

    public EventDataBuilder Raw(IEnumerable<byte> b)
    {
        _bytes.AddRange(b);
        return this;
    }

    /// <summary>A device path node: type, subtype, length (header included), body.</summary>
    public EventDataBuilder Node(int type, int subtype, string bodyHex) =>
        U8(type).U8(subtype).U16(4 + bodyHex.Length / 2).Hex(bodyHex);

    public EventDataBuilder End() => Node(0x7F, 0xFF, "");

    public byte[] Build() => [.. _bytes];

    public static implicit operator byte[](EventDataBuilder b) => b.Build();

    /// <summary>UEFI_VARIABLE_DATA around <paramref name="data"/>.</summary>
    public static byte[] Variable(string vendor, string name, byte[] data) => new EventDataBuilder()
        .Guid(vendor).U64((ulong)name.Length).U64((ulong)data.Length).Utf16(name).Raw(data);

    private static byte[] LittleEndian(int size, ulong v)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, v);
        return b[..size];
    }
}

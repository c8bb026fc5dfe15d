namespace Rempart.Attestation.Tests.EventLog;

/// <summary>
/// Just enough protobuf wire format (varints and length-delimited fields) to read the
/// go-tpm-tools attestation fixtures; test-only.
/// </summary>
public static class ProtobufReader
{
    public static List<(int Field, int WireType, ulong Varint, byte[] Bytes)> Fields(ReadOnlySpan<byte> data)
    {
        var list = new List<(int, int, ulong, byte[])>();
        int pos = 0;
        while (pos < data.Length)
        {
            ulong key = Varint(data, ref pos);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            switch (wire)
            {
                case 0:
                    list.Add((field, wire, Varint(data, ref pos), []));
                    break;
                case 2:
                    int len = (int)Varint(data, ref pos);
                    list.Add((field, wire, 0, data.Slice(pos, len).ToArray()));
                    pos += len;
                    break;
                case 1:
                    pos += 8;
                    break;
                case 5:
                    pos += 4;
                    break;
                default:
                    throw new FormatException($"wire type {wire}");
            }
        }
        return list;
    }

    private static ulong Varint(ReadOnlySpan<byte> data, ref int pos)
    {
        ulong v = 0;
        for (int shift = 0; ; shift += 7)
        {
            byte b = data[pos++];
            v |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0)
            {
                return v;
            }
        }
    }
}

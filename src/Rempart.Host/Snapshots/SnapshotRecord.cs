using System.Buffers.Binary;

namespace Rempart.Host.Snapshots;

/// <summary>
/// The framing of one record (docs/snapshot-format.md, "Records"), big-endian:
/// <code>
/// 0    1  kind: 0x00 = data, 0x01 = final
/// 1    4  L = plaintext length (u32): data → exactly the chunk size c; final → 0 .. c-1
/// 5    L  ciphertext
/// 5+L 16  GCM tag
/// </code>
/// Exactly one final record ends the stream; nothing may follow it.
/// </summary>
internal static class SnapshotRecord
{
    public const int PrefixSize = 5;
    public const int Overhead = PrefixSize + StreamCipher.TagSize;
    public const byte Data = 0x00;
    public const byte Final = 0x01;

    public static void WritePrefix(Span<byte> record, bool final, int length)
    {
        record[0] = final ? Final : Data;
        BinaryPrimitives.WriteUInt32BigEndian(record[1..], (uint)length);
    }

    /// <summary>Checks a record prefix found at <paramref name="offset"/> and returns the whole record's length.</summary>
    public static int Length(ReadOnlySpan<byte> prefix, int chunkSize, long index, long offset, out bool final)
    {
        final = prefix[0] == Final;
        if (prefix[0] is not (Data or Final))
        {
            throw new SnapshotException(SnapshotException.Format, $"chunk {index} at offset {offset}: expected a record kind of 0 (data) or 1 (final), got {prefix[0]}", index, offset);
        }
        uint length = BinaryPrimitives.ReadUInt32BigEndian(prefix[1..]);
        if (final ? length >= (uint)chunkSize : length != (uint)chunkSize)
        {
            throw new SnapshotException(SnapshotException.Format,
                $"chunk {index} at offset {offset + 1}: expected a plaintext length of {(final ? $"0 .. {chunkSize - 1} (final record)" : $"{chunkSize} (data record)")}, got {length}",
                index, offset + 1);
        }
        return PrefixSize + (int)length + StreamCipher.TagSize;
    }

    public static SnapshotException Truncated(long index, long offset, string where) =>
        new(SnapshotException.Truncated, $"the stream ends at offset {offset}, {where} chunk {index}", index, offset);

    public static SnapshotException Trailing(long index, long offset) =>
        new(SnapshotException.Trailing, $"bytes follow the final record (chunk {index}) at offset {offset}", index, offset);
}

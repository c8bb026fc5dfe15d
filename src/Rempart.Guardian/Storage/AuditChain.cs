using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Rempart.Guardian.Storage;

/// <summary>
/// The audit log's hash chain. Each record's hash is
/// <c>Hash = SHA-256(PrevHash ‖ canonical(Seq, At, Kind, Subject, DataJson))</c>, and the first
/// record's <c>PrevHash</c> is 32 zero bytes. The canonical encoding is, in order:
/// <list type="bullet">
/// <item><c>Seq</c>: 8 bytes, big-endian two's complement;</item>
/// <item><c>At</c>: 8 bytes, big-endian two's complement, Unix milliseconds (UTC; finer precision is dropped);</item>
/// <item><c>Kind</c>, <c>Subject</c>, <c>DataJson</c>: each a 4-byte big-endian length followed by
/// that many bytes of strict UTF-8 (no byte-order mark; a lone surrogate is an error, not a replacement).</item>
/// </list>
/// Length prefixes make the encoding injective: no two field tuples share an encoding.
/// The chain proves that no record inside it was changed, inserted or deleted; truncation of the
/// newest records is visible only against a head hash kept elsewhere.
/// </summary>
public static class AuditChain
{
    public const int HashSize = 32;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The previous hash of the first record: 32 zero bytes.</summary>
    public static byte[] Genesis => new byte[HashSize];

    /// <summary>The canonical encoding of a record's fields (see the type's summary).</summary>
    public static byte[] Canonical(long seq, DateTimeOffset at, string kind, string subject, string dataJson)
    {
        var fields = new[] { StrictUtf8.GetBytes(kind), StrictUtf8.GetBytes(subject), StrictUtf8.GetBytes(dataJson) };
        var buffer = new byte[16 + fields.Sum(f => 4 + f.Length)];
        var span = buffer.AsSpan();
        BinaryPrimitives.WriteInt64BigEndian(span, seq);
        BinaryPrimitives.WriteInt64BigEndian(span[8..], at.ToUnixTimeMilliseconds());
        var offset = 16;
        foreach (var field in fields)
        {
            BinaryPrimitives.WriteUInt32BigEndian(span[offset..], (uint)field.Length);
            field.CopyTo(span[(offset + 4)..]);
            offset += 4 + field.Length;
        }
        return buffer;
    }

    /// <summary><c>SHA-256(prevHash ‖ canonical(...))</c>.</summary>
    public static byte[] ComputeHash(ReadOnlySpan<byte> prevHash, long seq, DateTimeOffset at, string kind, string subject, string dataJson)
    {
        if (prevHash.Length != HashSize)
        {
            throw new ArgumentException($"a previous hash is {HashSize} bytes, not {prevHash.Length}", nameof(prevHash));
        }
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(prevHash);
        sha.AppendData(Canonical(seq, at, kind, subject, dataJson));
        return sha.GetHashAndReset();
    }

    /// <summary>Verifies a whole chain, from its first record (seq 1, genesis previous hash).</summary>
    public static (bool Ok, long? FirstBadSeq) Verify(IReadOnlyList<AuditRecord> records) => Verify(records, 1, Genesis);

    /// <summary>
    /// Verifies a run of records that must start at <paramref name="firstSeq"/> and chain to
    /// <paramref name="prevHash"/> (the hash of the record before it, already trusted). Returns the
    /// first sequence number at which the chain does not hold: a changed record's own seq, or the
    /// seq of the first missing record when records were deleted.
    /// </summary>
    public static (bool Ok, long? FirstBadSeq) Verify(IReadOnlyList<AuditRecord> records, long firstSeq, ReadOnlySpan<byte> prevHash)
    {
        ArgumentNullException.ThrowIfNull(records);
        var expectedSeq = firstSeq;
        var expectedPrev = prevHash.ToArray();
        foreach (var r in records)
        {
            if (r.Seq != expectedSeq
                || r.PrevHash.Length != HashSize
                || r.Hash.Length != HashSize
                || !CryptographicOperations.FixedTimeEquals(r.PrevHash, expectedPrev))
            {
                return (false, Math.Min(r.Seq, expectedSeq));
            }
            var computed = ComputeHash(r.PrevHash, r.Seq, r.At, r.Kind, r.Subject, r.DataJson);
            if (!CryptographicOperations.FixedTimeEquals(computed, r.Hash))
            {
                return (false, r.Seq);
            }
            expectedPrev = r.Hash;
            expectedSeq++;
        }
        return (true, null);
    }
}

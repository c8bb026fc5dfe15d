using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Rempart.Host.Snapshots;

/// <summary>
/// The AEAD of one sealed stream (docs/snapshot-format.md, "Keys", "Records"):
/// <code>
/// OKM    = HKDF-SHA-256(IKM = K, salt = header salt, info = "rempart/snapshot/v1/stream", L = 68)
/// encKey = OKM[0..32], macKey = OKM[32..64], noncePrefix = OKM[64..68]
/// H      = SHA-256(header bytes before the MAC)
/// nonce  = noncePrefix ‖ u64 index
/// AAD    = H ‖ u64 index ‖ kind ‖ u32 length   (the record's 5-byte prefix)
/// </code>
/// One instance is used by one thread at a time; no allocation per chunk. Dispose frees the AES context.
/// </summary>
internal sealed class StreamCipher : IDisposable
{
    public const int TagSize = 16;
    private const int OkmSize = 68;
    private static readonly byte[] Info = "rempart/snapshot/v1/stream"u8.ToArray();
    private const int AadSize = 32 + 8 + SnapshotRecord.PrefixSize;

    /// <summary>
    /// Bytes a buffer for <see cref="VerifyChunk"/> keeps in front of the record: the associated data, padded
    /// to a block, must end where the ciphertext begins (<see cref="GcmTagOnly"/>).
    /// </summary>
    public static readonly int VerifyHeadroom = GcmTagOnly.PaddedLength(AadSize) - SnapshotRecord.PrefixSize;

    private readonly AesGcm _gcm;
    private readonly byte[] _hashKey;
    private readonly byte[] _noncePrefix;
    private readonly byte[] _headerHash;

    private StreamCipher(ReadOnlySpan<byte> encKey, ReadOnlySpan<byte> noncePrefix, byte[] headerHash)
    {
        _gcm = new AesGcm(encKey, TagSize);
        _hashKey = GcmTagOnly.HashKey(encKey);
        _noncePrefix = noncePrefix.ToArray();
        _headerHash = headerHash;
    }

    /// <summary>A new stream for <paramref name="key"/>: a fresh salt, its header (MAC filled in) and its cipher.</summary>
    public static StreamCipher Create(SnapshotKey key, int chunkSize, out SnapshotHeader header)
    {
        Span<byte> salt = stackalloc byte[SnapshotHeader.SaltSize];
        RandomNumberGenerator.Fill(salt);
        header = SnapshotHeader.Build(key.VmId, key.SnapshotId, chunkSize, salt);
        Span<byte> okm = stackalloc byte[OkmSize];
        try
        {
            HKDF.DeriveKey(HashAlgorithmName.SHA256, key.Bytes, okm, salt, Info);
            HMACSHA256.HashData(okm[32..64], header.Authenticated, header.Bytes.AsSpan(header.Length - SnapshotHeader.MacSize));
            return new StreamCipher(okm[..32], okm[64..], SHA256.HashData(header.Authenticated));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(okm);
        }
    }

    /// <summary>
    /// The cipher of an existing stream, once its header names this key's VM and snapshot
    /// (<c>snapshot.wrong-vm</c>, <c>snapshot.wrong-snapshot</c>) and its MAC verifies (<c>snapshot.tampered</c>).
    /// </summary>
    public static StreamCipher Open(SnapshotKey key, SnapshotHeader header)
    {
        if (header.VmId != key.VmId)
        {
            throw new SnapshotException(SnapshotException.WrongVm, $"the snapshot header names VM '{header.VmId}', expected '{key.VmId}'", offset: 13);
        }
        if (header.SnapshotId != key.SnapshotId)
        {
            throw new SnapshotException(SnapshotException.WrongSnapshot, $"the snapshot header names snapshot '{header.SnapshotId}', expected '{key.SnapshotId}'", offset: 14 + header.VmId.Length);
        }
        Span<byte> okm = stackalloc byte[OkmSize];
        Span<byte> mac = stackalloc byte[SnapshotHeader.MacSize];
        try
        {
            HKDF.DeriveKey(HashAlgorithmName.SHA256, key.Bytes, okm, header.Salt, Info);
            HMACSHA256.HashData(okm[32..64], header.Authenticated, mac);
            if (!CryptographicOperations.FixedTimeEquals(mac, header.Mac))
            {
                throw new SnapshotException(SnapshotException.Tampered,
                    $"the snapshot header (offset 0 .. {header.Length}) does not authenticate: changed, or not this VM's key", offset: 0);
            }
            return new StreamCipher(okm[..32], okm[64..], SHA256.HashData(header.Authenticated));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(okm);
        }
    }

    /// <summary>
    /// Seals record <paramref name="index"/> in place: <paramref name="record"/> is the 5-byte prefix, the
    /// plaintext (overwritten by the ciphertext) and 16 bytes for the tag.
    /// </summary>
    public void SealChunk(long index, bool final, Span<byte> record)
    {
        int length = record.Length - SnapshotRecord.PrefixSize - TagSize;
        SnapshotRecord.WritePrefix(record, final, length);
        Span<byte> nonce = stackalloc byte[12];
        Span<byte> aad = stackalloc byte[32 + 8 + SnapshotRecord.PrefixSize];
        Prepare(index, record, nonce, aad);
        var body = record.Slice(SnapshotRecord.PrefixSize, length);
        _gcm.Encrypt(nonce, body, body, record[^TagSize..], aad);
    }

    /// <summary>
    /// Authenticates and decrypts record <paramref name="index"/> (prefix ‖ ciphertext ‖ tag, found at
    /// <paramref name="offset"/>) in place. <c>snapshot.tampered</c> if it does not authenticate; then the
    /// body is zeroed, so no unauthenticated plaintext is left behind.
    /// </summary>
    public void OpenChunk(long index, Span<byte> record, long offset)
    {
        int length = record.Length - SnapshotRecord.PrefixSize - TagSize;
        Span<byte> nonce = stackalloc byte[12];
        Span<byte> aad = stackalloc byte[32 + 8 + SnapshotRecord.PrefixSize];
        Prepare(index, record, nonce, aad);
        var body = record.Slice(SnapshotRecord.PrefixSize, length);
        try
        {
            _gcm.Decrypt(nonce, body, record[^TagSize..], body, aad);
        }
        catch (AuthenticationTagMismatchException e)
        {
            throw new SnapshotException(SnapshotException.Tampered,
                $"chunk {index} (record at offset {offset}, {record.Length} bytes) does not authenticate: changed, moved, from another snapshot or VM, or not this VM's key",
                index, offset, e);
        }
    }

    /// <summary>
    /// Authenticates record <paramref name="index"/> without decrypting it: the same tag as
    /// <see cref="OpenChunk"/> checks, computed by <see cref="GcmTagOnly"/>. <paramref name="buffer"/> holds
    /// <see cref="VerifyHeadroom"/> bytes of room, then the record (prefix ‖ ciphertext ‖ tag); the room and the
    /// record's prefix are overwritten with the padded associated data. <c>snapshot.tampered</c> if it does
    /// not authenticate.
    /// </summary>
    public void VerifyChunk(long index, Span<byte> buffer, long offset)
    {
        int recordLength = buffer.Length - VerifyHeadroom;
        int length = recordLength - SnapshotRecord.PrefixSize - TagSize;
        var record = buffer[VerifyHeadroom..];
        Span<byte> nonce = stackalloc byte[12];
        Span<byte> aad = stackalloc byte[AadSize];
        Prepare(index, record, nonce, aad);
        int padded = VerifyHeadroom + SnapshotRecord.PrefixSize;
        aad.CopyTo(buffer);
        buffer[AadSize..padded].Clear();
        Span<byte> tag = stackalloc byte[TagSize];
        GcmTagOnly.Compute(_gcm, _hashKey, nonce, buffer[..(padded + length)], AadSize, tag);
        if (!CryptographicOperations.FixedTimeEquals(tag, record[^TagSize..]))
        {
            throw new SnapshotException(SnapshotException.Tampered,
                $"chunk {index} (record at offset {offset}, {recordLength} bytes) does not authenticate: changed, moved, from another snapshot or VM, or not this VM's key",
                index, offset);
        }
    }

    public void Dispose()
    {
        _gcm.Dispose();
        CryptographicOperations.ZeroMemory(_hashKey);
    }

    private void Prepare(long index, ReadOnlySpan<byte> record, Span<byte> nonce, Span<byte> aad)
    {
        _noncePrefix.CopyTo(nonce);
        BinaryPrimitives.WriteUInt64BigEndian(nonce[4..], (ulong)index);
        _headerHash.CopyTo(aad);
        BinaryPrimitives.WriteUInt64BigEndian(aad[32..], (ulong)index);
        record[..SnapshotRecord.PrefixSize].CopyTo(aad[40..]);
    }
}

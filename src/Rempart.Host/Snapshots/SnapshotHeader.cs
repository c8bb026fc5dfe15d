using System.Buffers.Binary;
using System.Text;
using Rempart.KeyProtection;

namespace Rempart.Host.Snapshots;

/// <summary>
/// The header of a sealed snapshot stream (docs/snapshot-format.md, "Header"), big-endian:
/// <code>
/// 0      8  magic "RMPTSNAP"
/// 8      1  version = 1
/// 9      4  chunk size c (u32, 64 .. 16 MiB)
/// 13     1  n = length of the VM id (1-64)
/// 14     n  VM id (ASCII: letters, digits, '.', '-', '_'; not starting with '.')
/// 14+n   1  m = length of the snapshot id (1-64)
/// 15+n   m  snapshot id (same syntax)
/// 15+n+m 32 salt (random, fresh for every stream)
/// 47+n+m 32 MAC = HMAC-SHA-256(stream MAC key, bytes 0 .. 47+n+m)
/// </code>
/// A parsed header is only a claim until <see cref="StreamCipher.Open"/> has checked its MAC.
/// </summary>
public sealed class SnapshotHeader
{
    public const byte Version = 1;
    public const int MinChunkSize = 64;
    public const int MaxChunkSize = 16 << 20;
    public const int DefaultChunkSize = 1 << 20;
    public const int SaltSize = 32;
    public const int MacSize = 32;

    /// <summary>Magic, version, chunk size and the VM id's length byte.</summary>
    internal const int FixedSize = 14;

    /// <summary>The longest header: two 64-character ids.</summary>
    internal const int MaxSize = FixedSize + 64 + 1 + 64 + SaltSize + MacSize;

    internal static readonly byte[] Magic = "RMPTSNAP"u8.ToArray();

    private SnapshotHeader(byte[] bytes, int chunkSize, string vmId, string snapshotId)
    {
        Bytes = bytes;
        ChunkSize = chunkSize;
        VmId = vmId;
        SnapshotId = snapshotId;
    }

    public int ChunkSize { get; }

    public string VmId { get; }

    public string SnapshotId { get; }

    /// <summary>The header's length in the stream; the first record starts here.</summary>
    public int Length => Bytes.Length;

    /// <summary>
    /// SHA-256 of the header (MAC included), lowercase hex: names this one sealed stream (its salt is random).
    /// The snapshot's metadata can record it at seal time and compare it at restore, so an older stream of the
    /// same snapshot id cannot be put back in its place.
    /// </summary>
    public string Fingerprint => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Bytes));

    /// <summary>The header as written, MAC included.</summary>
    internal byte[] Bytes { get; }

    internal ReadOnlySpan<byte> Salt => Bytes.AsSpan(Bytes.Length - MacSize - SaltSize, SaltSize);

    /// <summary>The bytes the MAC covers (everything before it).</summary>
    internal ReadOnlySpan<byte> Authenticated => Bytes.AsSpan(0, Bytes.Length - MacSize);

    internal ReadOnlySpan<byte> Mac => Bytes.AsSpan(Bytes.Length - MacSize);

    /// <summary>A new header with a zero MAC; <see cref="StreamCipher.Create"/> fills it in.</summary>
    internal static SnapshotHeader Build(string vmId, string snapshotId, int chunkSize, ReadOnlySpan<byte> salt)
    {
        if (chunkSize is < MinChunkSize or > MaxChunkSize)
        {
            throw new ArgumentOutOfRangeException(nameof(chunkSize), $"{MinChunkSize} .. {MaxChunkSize} bytes");
        }
        var vm = Encoding.ASCII.GetBytes(vmId);
        var snap = Encoding.ASCII.GetBytes(snapshotId);
        var bytes = new byte[FixedSize + vm.Length + 1 + snap.Length + SaltSize + MacSize];
        Magic.CopyTo(bytes, 0);
        bytes[8] = Version;
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(9), (uint)chunkSize);
        bytes[13] = (byte)vm.Length;
        vm.CopyTo(bytes, 14);
        bytes[14 + vm.Length] = (byte)snap.Length;
        snap.CopyTo(bytes, 15 + vm.Length);
        salt.CopyTo(bytes.AsSpan(15 + vm.Length + snap.Length, SaltSize));
        return new SnapshotHeader(bytes, chunkSize, vmId, snapshotId);
    }

    /// <summary>
    /// Given the first bytes of a header (at least <see cref="FixedSize"/>), checks the fields they hold and
    /// returns the header's full length if they determine it, or how many bytes to read to learn more.
    /// <c>snapshot.format</c> for a field that breaks a rule.
    /// </summary>
    internal static int LengthSoFar(ReadOnlySpan<byte> h)
    {
        if (!h[..8].SequenceEqual(Magic))
        {
            throw Format(0, "the magic \"RMPTSNAP\"");
        }
        if (h[8] != Version)
        {
            throw Format(8, $"version {Version}, got {h[8]}");
        }
        uint chunk = BinaryPrimitives.ReadUInt32BigEndian(h[9..]);
        if (chunk is < MinChunkSize or > MaxChunkSize)
        {
            throw Format(9, $"a chunk size of {MinChunkSize} .. {MaxChunkSize}, got {chunk}");
        }
        int n = h[13];
        if (n is 0 or > 64)
        {
            throw Format(13, $"a VM id length of 1-64, got {n}");
        }
        if (h.Length < FixedSize + n + 1)
        {
            return FixedSize + n + 1;
        }
        if (!IsName(h.Slice(14, n)))
        {
            throw Format(14, "a VM id of letters, digits, '.', '-', '_'");
        }
        int m = h[14 + n];
        if (m is 0 or > 64)
        {
            throw Format(14 + n, $"a snapshot id length of 1-64, got {m}");
        }
        return FixedSize + n + 1 + m + SaltSize + MacSize;
    }

    /// <summary>Parses a whole header (exactly <see cref="LengthSoFar"/> bytes); the MAC is not checked here.</summary>
    internal static SnapshotHeader Parse(ReadOnlySpan<byte> h)
    {
        if (h.Length < FixedSize || LengthSoFar(h) != h.Length)
        {
            throw Format(0, "a whole header");
        }
        int n = h[13];
        int m = h[14 + n];
        if (!IsName(h.Slice(15 + n, m)))
        {
            throw Format(15 + n, "a snapshot id of letters, digits, '.', '-', '_'");
        }
        return new SnapshotHeader(h.ToArray(), (int)BinaryPrimitives.ReadUInt32BigEndian(h[9..]),
            Encoding.ASCII.GetString(h.Slice(14, n)), Encoding.ASCII.GetString(h.Slice(15 + n, m)));
    }

    /// <summary>Reads and parses a header from the start of <paramref name="stream"/>.</summary>
    internal static SnapshotHeader Read(Stream stream)
    {
        var buf = new byte[MaxSize];
        int have = 0;
        for (int need = FixedSize; ; need = LengthSoFar(buf.AsSpan(0, have)))
        {
            if (need == have)
            {
                return Parse(buf.AsSpan(0, have));
            }
            int got = stream.ReadAtLeast(buf.AsSpan(have, need - have), need - have, throwOnEndOfStream: false);
            have += got;
            if (have < need)
            {
                throw new SnapshotException(SnapshotException.Truncated, $"the stream ends at offset {have}, inside the header ({need} bytes at least)", offset: have);
            }
        }
    }

    /// <inheritdoc cref="Read"/>
    internal static async ValueTask<SnapshotHeader> ReadAsync(Stream stream, CancellationToken cancellationToken)
    {
        var buf = new byte[MaxSize];
        int have = 0;
        for (int need = FixedSize; ; need = LengthSoFar(buf.AsSpan(0, have)))
        {
            if (need == have)
            {
                return Parse(buf.AsSpan(0, have));
            }
            int got = await stream.ReadAtLeastAsync(buf.AsMemory(have, need - have), need - have, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
            have += got;
            if (have < need)
            {
                throw new SnapshotException(SnapshotException.Truncated, $"the stream ends at offset {have}, inside the header ({need} bytes at least)", offset: have);
            }
        }
    }

    private static bool IsName(ReadOnlySpan<byte> ascii)
    {
        foreach (byte b in ascii)
        {
            if (b >= 0x80)
            {
                return false;
            }
        }
        return KeyIds.IsName(Encoding.ASCII.GetString(ascii));
    }

    private static SnapshotException Format(long offset, string expected) =>
        new(SnapshotException.Format, $"snapshot header at offset {offset}: expected {expected}", offset: offset);
}

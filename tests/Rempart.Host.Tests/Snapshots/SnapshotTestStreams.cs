using System.Security.Cryptography;
using Rempart.Host.Snapshots;
using Rempart.KeyProtection;
using Rempart.Host.Tests.Vm;

namespace Rempart.Host.Tests.Snapshots;

/// <summary>Sealing and opening in memory, and the three ways a sealed stream is read, for the snapshot tests.</summary>
internal static class SnapshotTestStreams
{
    public static async Task<byte[]> Seal(byte[] plaintext, SnapshotKey key, int chunkSize)
    {
        var sealedBytes = new MemoryStream();
        var info = await SnapshotStream.SealAsync(new MemoryStream(plaintext), sealedBytes, key, chunkSize);
        Assert.Equal(plaintext.Length, info.PlaintextLength);
        Assert.Equal(sealedBytes.Length, info.SealedLength);
        return sealedBytes.ToArray();
    }

    /// <summary>The plaintext, by restore (verify, then open), after checking that verify and the pull reader agree.</summary>
    public static async Task<byte[]> Open(byte[] sealedBytes, SnapshotKey key)
    {
        var verified = await SnapshotStream.VerifyAsync(new MemoryStream(sealedBytes), key);
        var restored = new MemoryStream();
        var info = await SnapshotStream.RestoreAsync(new MemoryStream(sealedBytes), key, restored);
        Assert.Equal(verified, info with { Header = verified.Header });
        Assert.Equal(info.PlaintextLength, restored.Length);
        var pulled = new MemoryStream();
        using (var reader = new SnapshotReader(new MemoryStream(sealedBytes), key))
        {
            reader.CopyTo(pulled, 7);
            Assert.Equal(0, reader.Read(new byte[1]));
        }
        Assert.Equal(restored.ToArray(), pulled.ToArray());
        return restored.ToArray();
    }

    /// <summary>
    /// Asserts that verify, restore and the pull reader all refuse <paramref name="sealedBytes"/>, that the restore
    /// released nothing, and (when <paramref name="sameId"/>) that all three name the same failure; returns verify's.
    /// </summary>
    public static async Task<SnapshotException> Refused(byte[] sealedBytes, SnapshotKey key, bool sameId = true)
    {
        var verify = await Assert.ThrowsAsync<SnapshotException>(() => SnapshotStream.VerifyAsync(new MemoryStream(sealedBytes), key));
        var destination = new MemoryStream();
        var restore = await Assert.ThrowsAsync<SnapshotException>(() => SnapshotStream.RestoreAsync(new MemoryStream(sealedBytes), key, destination));
        Assert.Equal(0, destination.Length);
        var pull = Assert.Throws<SnapshotException>(() =>
        {
            using var reader = new SnapshotReader(new MemoryStream(sealedBytes), key);
            reader.CopyTo(Stream.Null);
        });
        if (sameId)
        {
            Assert.Equal(verify.Id, restore.Id);
            Assert.Equal(verify.Id, pull.Id);
        }
        Assert.NotEqual(SnapshotException.Changed, restore.Id);
        return verify;
    }

    public static SnapshotKey Key(VmMasterKey vmk, string vmId = "vm-test-1", string snapshotId = "snap-1") =>
        SnapshotKey.Derive(vmk, vmId, snapshotId);

    public static VmMasterKey NewVmk() => VmTestKeys.Random();

    /// <summary>The offsets of every record of a sealed stream (header length first), from its framing.</summary>
    public static List<(int Offset, int Length)> Records(byte[] sealedBytes)
    {
        int n = sealedBytes[13];
        int offset = 14 + n + 1 + sealedBytes[14 + n] + 64;
        var records = new List<(int, int)>();
        while (offset < sealedBytes.Length)
        {
            int length = 5 + (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(sealedBytes.AsSpan(offset + 1)) + 16;
            records.Add((offset, length));
            offset += length;
        }
        return records;
    }

    public static byte[] Random(int n) => RandomNumberGenerator.GetBytes(n);
}

using System.Security.Cryptography;
using Rempart.KeyProtection;

namespace Rempart.Host.Snapshots;

/// <summary>
/// The key of one snapshot of one VM: K = HKDF(VMK, "snapshot/&lt;id&gt;") (DESIGN.md §3 step 5,
/// <see cref="VmKeys.Snapshot"/>), with the VM id and snapshot id it belongs to. Each sealed stream
/// derives its own AES and MAC keys from K and a fresh random salt (docs/snapshot-format.md, "Keys"),
/// so a snapshot id reused after a delete never reuses a nonce. Holds K, not the VMK; Dispose wipes it.
/// </summary>
public sealed class SnapshotKey : IDisposable
{
    public const int Length = 32;
    private byte[]? _key;

    private SnapshotKey(string vmId, string snapshotId, byte[] key)
    {
        VmId = vmId;
        SnapshotId = snapshotId;
        _key = key;
    }

    public string VmId { get; }

    public string SnapshotId { get; }

    /// <summary>The key of snapshot <paramref name="snapshotId"/> of VM <paramref name="vmId"/> (both 1-64 of letters, digits, '.', '-', '_').</summary>
    public static SnapshotKey Derive(VmMasterKey vmk, string vmId, string snapshotId)
    {
        CheckIds(vmId, snapshotId);
        var key = new byte[Length];
        VmKeys.Derive(vmk.Bytes, VmKeys.Snapshot(snapshotId), key);
        return new SnapshotKey(vmId, snapshotId, key);
    }

    /// <summary>Takes a copy of K itself (tests, and a caller that derived it elsewhere).</summary>
    internal static SnapshotKey FromBytes(ReadOnlySpan<byte> key, string vmId, string snapshotId)
    {
        CheckIds(vmId, snapshotId);
        if (key.Length != Length)
        {
            throw new ArgumentException($"a snapshot key is {Length} bytes", nameof(key));
        }
        return new SnapshotKey(vmId, snapshotId, key.ToArray());
    }

    internal ReadOnlySpan<byte> Bytes => _key ?? throw new ObjectDisposedException(nameof(SnapshotKey));

    public void Dispose()
    {
        if (_key is { } k)
        {
            CryptographicOperations.ZeroMemory(k);
            _key = null;
        }
    }

    public override string ToString() => $"SnapshotKey({VmId}/{SnapshotId}, ***)";

    private static void CheckIds(string vmId, string snapshotId)
    {
        if (!KeyIds.IsName(vmId))
        {
            throw new ArgumentException($"'{vmId}' is not a VM id (1-64 letters, digits, '.', '-', '_')", nameof(vmId));
        }
        if (!KeyIds.IsName(snapshotId))
        {
            throw new ArgumentException($"'{snapshotId}' is not a snapshot id (1-64 letters, digits, '.', '-', '_')", nameof(snapshotId));
        }
    }
}

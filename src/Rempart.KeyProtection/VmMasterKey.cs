using System.Security.Cryptography;

namespace Rempart.KeyProtection;

/// <summary>
/// A VM master key (256 random bits) in memory. Dispose wipes it; keep it for as short a time as a
/// release or a derivation takes. Never logged, never written in clear except by an explicit
/// <c>rempart kp recover --out</c>.
/// </summary>
public sealed class VmMasterKey : IDisposable
{
    public const int Length = 32;
    private byte[]? _key;

    /// <summary>Takes ownership of <paramref name="key"/> (wiped on Dispose).</summary>
    internal VmMasterKey(byte[] key)
    {
        if (key.Length != Length)
        {
            CryptographicOperations.ZeroMemory(key);
            throw new ArgumentException($"a VM master key is {Length} bytes", nameof(key));
        }
        _key = key;
    }

    internal static VmMasterKey Generate() => new(RandomNumberGenerator.GetBytes(Length));

    /// <summary>A copy of recovered key bytes (e.g. read back from a recovery file); the caller wipes its own buffer.</summary>
    public static VmMasterKey FromBytes(ReadOnlySpan<byte> key) => new(key.ToArray());

    /// <summary>The key bytes. Throws <see cref="ObjectDisposedException"/> once wiped.</summary>
    public ReadOnlySpan<byte> Bytes => _key ?? throw new ObjectDisposedException(nameof(VmMasterKey));

    /// <summary>A per-purpose key, see <see cref="VmKeys.Derive(VmMasterKey, string, int)"/>.</summary>
    public byte[] Derive(string label, int length = 32) => VmKeys.Derive(this, label, length);

    public void Dispose()
    {
        if (_key is { } k)
        {
            CryptographicOperations.ZeroMemory(k);
            _key = null;
        }
    }

    public override string ToString() => "VmMasterKey(***)";
}

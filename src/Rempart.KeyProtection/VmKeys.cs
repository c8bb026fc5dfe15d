using System.Security.Cryptography;
using System.Text;

namespace Rempart.KeyProtection;

/// <summary>
/// Per-purpose keys derived from the VM master key (DESIGN.md §3 step 5):
/// key = HKDF-SHA-256(IKM = VMK, salt = empty, info = "rempart/vm-key/v1/" || label, L) (RFC 5869).
/// Labels: <c>vtpm</c>, <c>nvram</c>, <c>disk/&lt;id&gt;</c>, <c>snapshot/&lt;id&gt;</c>,
/// <c>migration/&lt;id&gt;</c>, where id is 1-64 ASCII letters, digits, '.', '-', '_' (not starting
/// with '.'). Any other label is refused, so two purposes can never share a key by a typo.
/// The prefix keeps these keys apart from the key protector's MAC key ("rempart/kp/v1/mac").
/// </summary>
public static class VmKeys
{
    public const string InfoPrefix = "rempart/vm-key/v1/";
    public const string Vtpm = "vtpm";
    public const string Nvram = "nvram";
    public const int MinLength = 16;
    public const int MaxLength = 64;

    public static string Disk(string id) => Checked("disk/" + id);

    public static string Snapshot(string id) => Checked("snapshot/" + id);

    public static string Migration(string id) => Checked("migration/" + id);

    public static bool IsValidLabel(string? label)
    {
        if (label is Vtpm or Nvram)
        {
            return true;
        }
        int slash = label?.IndexOf('/') ?? -1;
        return slash > 0 && label![..slash] is "disk" or "snapshot" or "migration" && KeyIds.IsName(label[(slash + 1)..]);
    }

    /// <summary>A key of <paramref name="length"/> bytes (16-64, default 32) for <paramref name="label"/>; the caller wipes it.</summary>
    public static byte[] Derive(VmMasterKey vmk, string label, int length = 32)
    {
        var output = new byte[length is >= MinLength and <= MaxLength ? length : throw new ArgumentOutOfRangeException(nameof(length), $"{MinLength}-{MaxLength} bytes")];
        Derive(vmk.Bytes, label, output);
        return output;
    }

    /// <summary>Derives into <paramref name="output"/> (16-64 bytes).</summary>
    public static void Derive(ReadOnlySpan<byte> vmk, string label, Span<byte> output)
    {
        Checked(label);
        if (vmk.Length != VmMasterKey.Length)
        {
            throw new ArgumentException($"a VM master key is {VmMasterKey.Length} bytes", nameof(vmk));
        }
        if (output.Length is < MinLength or > MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(output), $"{MinLength}-{MaxLength} bytes");
        }
        HKDF.DeriveKey(HashAlgorithmName.SHA256, vmk, output, salt: [], info: Encoding.ASCII.GetBytes(InfoPrefix + label));
    }

    private static string Checked(string label) =>
        IsValidLabel(label) ? label : throw new ArgumentException($"'{label}' is not a VM key label (vtpm, nvram, disk/ID, snapshot/ID, migration/ID)", nameof(label));
}

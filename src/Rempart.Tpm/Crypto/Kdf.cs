using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Rempart.Tpm.Crypto;

/// <summary>The TPM's key derivation functions (TPM 2.0 Library Part 1, §11.4.10).</summary>
public static class Kdf
{
    /// <summary>
    /// KDFa (Part 1, §11.4.10.2): SP 800-108 counter mode with HMAC. Each block is
    /// HMAC(key, [i]32 || Label || 00 || contextU || contextV || [bits]32); the result is
    /// truncated to <paramref name="bits"/>, masking the top bits of the first byte when
    /// bits is not a multiple of 8.
    /// </summary>
    public static byte[] KdfA(TpmAlgId hash, ReadOnlySpan<byte> key, string label, ReadOnlySpan<byte> contextU, ReadOnlySpan<byte> contextV, int bits)
    {
        var labelBytes = LabelBytes(label);
        var fixedInput = new byte[labelBytes.Length + contextU.Length + contextV.Length + 4];
        labelBytes.CopyTo(fixedInput, 0);
        contextU.CopyTo(fixedInput.AsSpan(labelBytes.Length));
        contextV.CopyTo(fixedInput.AsSpan(labelBytes.Length + contextU.Length));
        BinaryPrimitives.WriteUInt32BigEndian(fixedInput.AsSpan(fixedInput.Length - 4), (uint)bits);
        var output = CounterModeHmac(hash, key, fixedInput, bits);
        MaskLeadingBits(output, bits);
        return output;
    }

    /// <summary>
    /// KDFe (Part 1, §11.4.10.3): SP 800-56A concatenation KDF. Each block is
    /// H([i]32 || Z || Label || 00 || partyUInfo || partyVInfo).
    /// </summary>
    public static byte[] KdfE(TpmAlgId hash, ReadOnlySpan<byte> z, string label, ReadOnlySpan<byte> partyU, ReadOnlySpan<byte> partyV, int bits)
    {
        var labelBytes = LabelBytes(label);
        var otherInfo = new byte[labelBytes.Length + partyU.Length + partyV.Length];
        labelBytes.CopyTo(otherInfo, 0);
        partyU.CopyTo(otherInfo.AsSpan(labelBytes.Length));
        partyV.CopyTo(otherInfo.AsSpan(labelBytes.Length + partyU.Length));
        var output = ConcatKdf(hash, z, otherInfo, bits);
        MaskLeadingBits(output, bits);
        return output;
    }

    /// <summary>
    /// SP 800-108 KDF in counter mode with an HMAC PRF, the counter a 32-bit big-endian
    /// prefix of opaque fixed input: block i is HMAC(key, [i]32 || fixedInput). Returns
    /// ceil(bits / 8) whole octets; KDFa's masking of a partial first octet is the caller's.
    /// </summary>
    internal static byte[] CounterModeHmac(TpmAlgId hash, ReadOnlySpan<byte> key, ReadOnlySpan<byte> fixedInput, int bits)
    {
        int bytes = (bits + 7) / 8;
        var output = new byte[bytes];
        var block = new byte[4 + fixedInput.Length];
        fixedInput.CopyTo(block.AsSpan(4));
        int produced = 0;
        for (uint i = 1; produced < bytes; i++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(block, i);
            var h = TpmHash.Hmac(hash, key, block);
            int n = Math.Min(h.Length, bytes - produced);
            h.AsSpan(0, n).CopyTo(output.AsSpan(produced));
            CryptographicOperations.ZeroMemory(h);
            produced += n;
        }
        return output;
    }

    /// <summary>
    /// SP 800-56A (§5.8.1) one-step concatenation KDF with a hash: block i is
    /// H([i]32 || Z || otherInfo). Returns ceil(bits / 8) whole octets; KDFe's masking of a
    /// partial first octet is the caller's.
    /// </summary>
    internal static byte[] ConcatKdf(TpmAlgId hash, ReadOnlySpan<byte> z, ReadOnlySpan<byte> otherInfo, int bits)
    {
        int bytes = (bits + 7) / 8;
        var output = new byte[bytes];
        var block = new byte[4 + z.Length + otherInfo.Length];
        z.CopyTo(block.AsSpan(4));
        otherInfo.CopyTo(block.AsSpan(4 + z.Length));
        int produced = 0;
        for (uint i = 1; produced < bytes; i++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(block, i);
            var h = TpmHash.Hash(hash, block);
            int n = Math.Min(h.Length, bytes - produced);
            h.AsSpan(0, n).CopyTo(output.AsSpan(produced));
            CryptographicOperations.ZeroMemory(h);
            produced += n;
        }
        CryptographicOperations.ZeroMemory(block);
        return output;
    }

    /// <summary>When bits is not a multiple of 8, the TPM clears the unused top bits of the first octet (Part 1, §11.4.10.2).</summary>
    private static void MaskLeadingBits(byte[] output, int bits)
    {
        if (bits % 8 != 0)
        {
            output[0] &= (byte)((1 << (bits % 8)) - 1);
        }
    }

    /// <summary>A label with its terminating zero octet (Part 1, §11.4.10.4), unless it already ends in one.</summary>
    private static byte[] LabelBytes(string label)
    {
        if (label.Length > 0 && label[^1] == '\0')
        {
            return Encoding.ASCII.GetBytes(label);
        }
        return [.. Encoding.ASCII.GetBytes(label), 0];
    }
}

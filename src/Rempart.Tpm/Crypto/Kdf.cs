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
        int bytes = (bits + 7) / 8;
        var output = new byte[bytes];
        var block = new byte[4 + labelBytes.Length + contextU.Length + contextV.Length + 4];
        labelBytes.CopyTo(block.AsSpan(4));
        contextU.CopyTo(block.AsSpan(4 + labelBytes.Length));
        contextV.CopyTo(block.AsSpan(4 + labelBytes.Length + contextU.Length));
        BinaryPrimitives.WriteUInt32BigEndian(block.AsSpan(block.Length - 4), (uint)bits);
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
        if (bits % 8 != 0)
        {
            output[0] &= (byte)((1 << (bits % 8)) - 1);
        }
        return output;
    }

    /// <summary>
    /// KDFe (Part 1, §11.4.10.3): SP 800-56A concatenation KDF. Each block is
    /// H([i]32 || Z || Label || 00 || partyUInfo || partyVInfo).
    /// </summary>
    public static byte[] KdfE(TpmAlgId hash, ReadOnlySpan<byte> z, string label, ReadOnlySpan<byte> partyU, ReadOnlySpan<byte> partyV, int bits)
    {
        var labelBytes = LabelBytes(label);
        int bytes = (bits + 7) / 8;
        var output = new byte[bytes];
        var block = new byte[4 + z.Length + labelBytes.Length + partyU.Length + partyV.Length];
        z.CopyTo(block.AsSpan(4));
        labelBytes.CopyTo(block.AsSpan(4 + z.Length));
        partyU.CopyTo(block.AsSpan(4 + z.Length + labelBytes.Length));
        partyV.CopyTo(block.AsSpan(4 + z.Length + labelBytes.Length + partyU.Length));
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
        if (bits % 8 != 0)
        {
            output[0] &= (byte)((1 << (bits % 8)) - 1);
        }
        return output;
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

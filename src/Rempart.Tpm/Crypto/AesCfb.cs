using System.Security.Cryptography;

namespace Rempart.Tpm.Crypto;

/// <summary>
/// AES in CFB mode with a full-block (128-bit) feedback, as the TPM uses it for parameter
/// encryption and credential protection (Part 1, §11.4.6; §21.4). The last block may be
/// partial: CFB is a stream mode and the TPM does not pad.
/// </summary>
public static class AesCfb
{
    public static void Encrypt(ReadOnlySpan<byte> key, ReadOnlySpan<byte> iv, Span<byte> data) => Transform(key, iv, data, encrypt: true);

    public static void Decrypt(ReadOnlySpan<byte> key, ReadOnlySpan<byte> iv, Span<byte> data) => Transform(key, iv, data, encrypt: false);

    private static void Transform(ReadOnlySpan<byte> key, ReadOnlySpan<byte> iv, Span<byte> data, bool encrypt)
    {
        using var aes = Aes.Create();
        aes.SetKey(key);
        Span<byte> register = stackalloc byte[16];
        Span<byte> stream = stackalloc byte[16];
        iv.CopyTo(register);
        for (int off = 0; off < data.Length; off += 16)
        {
            aes.EncryptEcb(register, stream, PaddingMode.None);
            int n = Math.Min(16, data.Length - off);
            var chunk = data.Slice(off, n);
            if (encrypt)
            {
                for (int i = 0; i < n; i++)
                {
                    chunk[i] ^= stream[i];
                }
                chunk.CopyTo(register);
            }
            else
            {
                chunk.CopyTo(register);
                for (int i = 0; i < n; i++)
                {
                    chunk[i] ^= stream[i];
                }
            }
        }
        CryptographicOperations.ZeroMemory(stream);
        CryptographicOperations.ZeroMemory(register);
    }
}

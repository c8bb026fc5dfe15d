using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Rempart.Host.Snapshots;

/// <summary>
/// The AES-GCM tag of a record computed without decrypting it (NIST SP 800-38D), for a pass that only
/// authenticates. The tag is T = E_K(J0) ⊕ GHASH_H(A, C), and GHASH runs over pad(A) ‖ pad(C) ‖ L with
/// L = [bits of A]₆₄ ‖ [bits of C]₆₄. Asking AES-GCM to seal an empty plaintext with the associated data
/// A′ = pad(A) ‖ C gives T′ = E_K(J0) ⊕ GHASH_H(A′, ∅), over the same blocks but for the last one,
/// L′ = [bits of A′]₆₄ ‖ 0. GHASH is X_i = (X_(i-1) ⊕ B_i)·H, so the two differ only by (L ⊕ L′)·H, and
/// <code>T = T′ ⊕ (L ⊕ L′)·H</code> — exactly the tag a decryption would check, at the cost of GHASH
/// alone (OpenSSL's associated-data path: about twice the rate of a decryption here) plus one
/// multiplication in GF(2^128) per record, done here in constant time (H is secret).
/// </summary>
internal static class GcmTagOnly
{
    public const int BlockSize = 16;

    /// <summary>The associated data padded to whole blocks, as it must lie in front of the ciphertext.</summary>
    public static int PaddedLength(int associatedLength) => (associatedLength + BlockSize - 1) / BlockSize * BlockSize;

    /// <summary>
    /// Computes the tag of ciphertext <c>buffer[padded(A)..]</c> under associated data A, where
    /// <paramref name="buffer"/> is pad(A) ‖ C: A in its first <paramref name="associatedLength"/> bytes, zeros
    /// up to the next block boundary, then C. <paramref name="hashKey"/> is H = E_K(0¹²⁸) of
    /// <paramref name="gcm"/>'s key.
    /// </summary>
    public static void Compute(AesGcm gcm, ReadOnlySpan<byte> hashKey, ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> buffer,
        int associatedLength, Span<byte> tag)
    {
        if (hashKey.Length != BlockSize || tag.Length != BlockSize)
        {
            throw new ArgumentException("H and the tag are 16 bytes");
        }
        int padded = PaddedLength(associatedLength);
        if (associatedLength < 0 || buffer.Length < padded)
        {
            throw new ArgumentOutOfRangeException(nameof(associatedLength));
        }
        for (int i = associatedLength; i < padded; i++)
        {
            if (buffer[i] != 0)
            {
                throw new ArgumentException("the associated data's padding must be zeros", nameof(buffer));
            }
        }
        long cipherBits = 8L * (buffer.Length - padded);
        gcm.Encrypt(nonce, ReadOnlySpan<byte>.Empty, Span<byte>.Empty, tag, buffer);
        // L ⊕ L′: the first halves are the bit lengths of A and of A′, the second those of C and of nothing.
        Span<byte> d = stackalloc byte[BlockSize];
        BinaryPrimitives.WriteUInt64BigEndian(d, (ulong)(8L * associatedLength) ^ (ulong)(8L * buffer.Length));
        BinaryPrimitives.WriteUInt64BigEndian(d[8..], (ulong)cipherBits);
        Span<byte> product = stackalloc byte[BlockSize];
        Multiply(d, hashKey, product);
        for (int i = 0; i < BlockSize; i++)
        {
            tag[i] ^= product[i];
        }
        CryptographicOperations.ZeroMemory(product);
    }

    /// <summary>H = E_K(0¹²⁸), GCM's hash key, for an AES key.</summary>
    public static byte[] HashKey(ReadOnlySpan<byte> key)
    {
        using var aes = Aes.Create(); // disposing it clears its copy of the key
        aes.SetKey(key);
        var h = new byte[BlockSize];
        aes.EncryptEcb(new byte[BlockSize], h, PaddingMode.None);
        return h;
    }

    /// <summary>
    /// X·Y in GF(2^128) with GCM's bit order (SP 800-38D, algorithm 1: bit 0 is the most significant bit of
    /// byte 0; R = 11100001 ‖ 0¹²⁰), without a branch or an index that depends on either operand.
    /// </summary>
    public static void Multiply(ReadOnlySpan<byte> x, ReadOnlySpan<byte> y, Span<byte> result)
    {
        ulong xh = BinaryPrimitives.ReadUInt64BigEndian(x), xl = BinaryPrimitives.ReadUInt64BigEndian(x[8..]);
        ulong vh = BinaryPrimitives.ReadUInt64BigEndian(y), vl = BinaryPrimitives.ReadUInt64BigEndian(y[8..]);
        ulong zh = 0, zl = 0;
        for (int i = 0; i < 128; i++)
        {
            ulong word = i < 64 ? xh : xl; // depends on i only
            ulong bit = (word >> (63 - (i & 63))) & 1;
            ulong take = 0UL - bit;
            zh ^= vh & take;
            zl ^= vl & take;
            ulong reduce = 0UL - (vl & 1);
            vl = (vl >> 1) | (vh << 63);
            vh = (vh >> 1) ^ (0xE100000000000000UL & reduce);
        }
        BinaryPrimitives.WriteUInt64BigEndian(result, zh);
        BinaryPrimitives.WriteUInt64BigEndian(result[8..], zl);
    }
}

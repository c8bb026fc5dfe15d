using System.Security.Cryptography;
using Rempart.Host.Snapshots;

namespace Rempart.Host.Tests.Snapshots;

/// <summary>
/// The verify pass's tag, computed without decrypting (<see cref="GcmTagOnly"/>), must be the AES-GCM tag:
/// against the published GCM test vectors and against .NET's (OpenSSL's) AES-GCM for every shape of
/// associated data and ciphertext, and a changed byte anywhere must change it.
/// </summary>
public sealed class GcmTagOnlyTests
{
    // McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 4 (AES-128) and 16 (AES-256):
    // 20 bytes of associated data, 60 bytes of plaintext.
    public static TheoryData<string, string, string, string, string, string> Vectors => new()
    {
        {
            "feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
            "5bc94fbc3221a5db94fae95ae7121a47"
        },
        {
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b"
        },
    };

    [Theory]
    [MemberData(nameof(Vectors))]
    public void The_published_test_vectors_give_their_tags(string key, string iv, string plaintext, string aad, string ciphertext, string tag)
    {
        var k = Convert.FromHexString(key);
        var a = Convert.FromHexString(aad);
        var c = Convert.FromHexString(ciphertext);
        using var gcm = new AesGcm(k, 16);
        // The vector's ciphertext really is the plaintext's, under .NET's AES-GCM (so the vector is the one meant).
        var sealedBytes = new byte[c.Length];
        var realTag = new byte[16];
        gcm.Encrypt(Convert.FromHexString(iv), Convert.FromHexString(plaintext), sealedBytes, realTag, a);
        Assert.Equal(ciphertext, Convert.ToHexStringLower(sealedBytes));
        Assert.Equal(tag, Convert.ToHexStringLower(realTag));

        Assert.Equal(tag, Convert.ToHexStringLower(TagOnly(gcm, k, Convert.FromHexString(iv), a, c)));
    }

    [Theory]
    [InlineData(16)]
    [InlineData(32)]
    public void Every_shape_of_associated_data_and_ciphertext_gives_the_decryption_s_tag(int keySize)
    {
        var key = RandomNumberGenerator.GetBytes(keySize);
        using var gcm = new AesGcm(key, 16);
        foreach (int aadLength in (int[])[0, 1, 13, 15, 16, 17, 45, 48])
        {
            foreach (int length in (int[])[0, 1, 15, 16, 17, 255, 4096 + 7, 65536])
            {
                var nonce = RandomNumberGenerator.GetBytes(12);
                var aad = RandomNumberGenerator.GetBytes(aadLength);
                var plaintext = RandomNumberGenerator.GetBytes(length);
                var ciphertext = new byte[length];
                var tag = new byte[16];
                gcm.Encrypt(nonce, plaintext, ciphertext, tag, aad);
                Assert.Equal(Convert.ToHexStringLower(tag), Convert.ToHexStringLower(TagOnly(gcm, key, nonce, aad, ciphertext)));
            }
        }
    }

    [Fact]
    public void A_changed_byte_of_the_ciphertext_or_the_associated_data_changes_the_tag()
    {
        var key = RandomNumberGenerator.GetBytes(32);
        using var gcm = new AesGcm(key, 16);
        var nonce = RandomNumberGenerator.GetBytes(12);
        var aad = RandomNumberGenerator.GetBytes(45);
        var ciphertext = RandomNumberGenerator.GetBytes(300);
        var good = TagOnly(gcm, key, nonce, aad, ciphertext);
        for (int i = 0; i < aad.Length + ciphertext.Length; i++)
        {
            var a = (byte[])aad.Clone();
            var c = (byte[])ciphertext.Clone();
            if (i < a.Length)
            {
                a[i] ^= 0x01;
            }
            else
            {
                c[i - a.Length] ^= 0x80;
            }
            Assert.NotEqual(good, TagOnly(gcm, key, nonce, a, c));
        }
        // A ciphertext one zero byte longer (the lengths block is what tells them apart).
        Assert.NotEqual(good, TagOnly(gcm, key, nonce, aad, [.. ciphertext, 0]));
    }

    [Fact]
    public void Multiplication_follows_GCM_s_bit_order()
    {
        // The multiplicative identity is the bit string 1 0 0 … 0: byte 0 = 0x80.
        var one = new byte[16];
        one[0] = 0x80;
        var x = RandomNumberGenerator.GetBytes(16);
        var y = RandomNumberGenerator.GetBytes(16);
        var product = new byte[16];
        GcmTagOnly.Multiply(x, one, product);
        Assert.Equal(x, product);
        var xy = new byte[16];
        var yx = new byte[16];
        GcmTagOnly.Multiply(x, y, xy);
        GcmTagOnly.Multiply(y, x, yx);
        Assert.Equal(xy, yx);
        // α·α = α²: 0100…0 · 0100…0 = 0010…0; and α¹²⁷·α = α¹²⁸ = 1 + α + α² + α⁷ (R = 11100001).
        var alpha = new byte[16];
        alpha[0] = 0x40;
        GcmTagOnly.Multiply(alpha, alpha, product);
        Assert.Equal("20000000000000000000000000000000", Convert.ToHexStringLower(product));
        var alpha127 = new byte[16];
        alpha127[15] = 0x01;
        GcmTagOnly.Multiply(alpha127, alpha, product);
        Assert.Equal("e1000000000000000000000000000000", Convert.ToHexStringLower(product));
    }

    [Fact]
    public void Padding_that_is_not_zeros_is_refused()
    {
        var key = RandomNumberGenerator.GetBytes(32);
        using var gcm = new AesGcm(key, 16);
        var buffer = new byte[16 + 10];
        buffer[5] = 1; // associated data of 3 bytes, padding byte 5 not zero
        Assert.Throws<ArgumentException>(() => GcmTagOnly.Compute(gcm, GcmTagOnly.HashKey(key), new byte[12], buffer, 3, new byte[16]));
    }

    private static byte[] TagOnly(AesGcm gcm, byte[] key, byte[] nonce, byte[] aad, byte[] ciphertext)
    {
        int padded = GcmTagOnly.PaddedLength(aad.Length);
        var buffer = new byte[padded + ciphertext.Length];
        aad.CopyTo(buffer, 0);
        ciphertext.CopyTo(buffer, padded);
        var tag = new byte[16];
        GcmTagOnly.Compute(gcm, GcmTagOnly.HashKey(key), nonce, buffer, aad.Length, tag);
        return tag;
    }
}

using Rempart.Tpm.Crypto;

namespace Rempart.Tpm.Tests.Crypto;

/// <summary>
/// Known-answer tests for AES-CFB128 (the TPM's CFB, Part 1 §11.4.6) from NIST SP 800-38A,
/// "Recommendation for Block Cipher Modes of Operation", Appendix F.3
/// (https://doi.org/10.6028/NIST.SP.800-38A). The same values are transcribed in
/// github.com/GaloisInc/cryptol-specs, Primitive/Symmetric/Cipher/Block/Modes/Tests/
/// AES128_CFB.cry, AES192_CFB.cry and AES256_CFB.cry.
/// </summary>
public sealed class AesCfbKnownAnswerTests
{
    // F.3.13-F.3.18: every CFB128 example uses this IV and these four plaintext blocks.
    private const string Iv = "000102030405060708090a0b0c0d0e0f";

    private const string Plaintext =
        "6bc1bee22e409f96e93d7e117393172a"
        + "ae2d8a571e03ac9c9eb76fac45af8e51"
        + "30c81c46a35ce411e5fbc1191a0a52ef"
        + "f69f2445df4f9b17ad2b417be66c3710";

    // F.3.13 CFB128-AES128.Encrypt / F.3.14 CFB128-AES128.Decrypt.
    private const string Key128 = "2b7e151628aed2a6abf7158809cf4f3c";

    private const string Ciphertext128 =
        "3b3fd92eb72dad20333449f8e83cfb4a"
        + "c8a64537a0b3a93fcde3cdad9f1ce58b"
        + "26751f67a3cbb140b1808cf187a4f4df"
        + "c04b05357c5d1c0eeac4c66f9ff7f2e6";

    // F.3.15 CFB128-AES192.Encrypt / F.3.16 CFB128-AES192.Decrypt.
    private const string Key192 = "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b";

    private const string Ciphertext192 =
        "cdc80d6fddf18cab34c25909c99a4174"
        + "67ce7f7f81173621961a2b70171d3d7a"
        + "2e1e8a1dd59b88b1c8e60fed1efac4c9"
        + "c05f9f9ca9834fa042ae8fba584b09ff";

    // F.3.17 CFB128-AES256.Encrypt / F.3.18 CFB128-AES256.Decrypt.
    private const string Key256 = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";

    private const string Ciphertext256 =
        "dc7e84bfda79164b7ecd8486985d3860"
        + "39ffed143b28b1c832113c6331e5407b"
        + "df10132415e54b92a13ed0a8267ae2f9"
        + "75a385741ab9cef82031623d55b1e471";

    [Theory]
    [InlineData(Key128, Ciphertext128)] // F.3.13
    [InlineData(Key192, Ciphertext192)] // F.3.15
    [InlineData(Key256, Ciphertext256)] // F.3.17
    public void Encrypt_matches_sp800_38a_cfb128_example(string key, string ciphertext)
    {
        var data = Convert.FromHexString(Plaintext);

        AesCfb.Encrypt(Convert.FromHexString(key), Convert.FromHexString(Iv), data);

        Assert.Equal(ciphertext, Convert.ToHexStringLower(data));
    }

    [Theory]
    [InlineData(Key128, Ciphertext128)] // F.3.14
    [InlineData(Key192, Ciphertext192)] // F.3.16
    [InlineData(Key256, Ciphertext256)] // F.3.18
    public void Decrypt_matches_sp800_38a_cfb128_example(string key, string ciphertext)
    {
        var data = Convert.FromHexString(ciphertext);

        AesCfb.Decrypt(Convert.FromHexString(key), Convert.FromHexString(Iv), data);

        Assert.Equal(Plaintext, Convert.ToHexStringLower(data));
    }

    // CFB is a stream mode: ciphertext octet j depends only on plaintext octets 0..j, so the
    // first n octets of the SP 800-38A plaintext encrypt to the first n octets of its ciphertext,
    // whether or not n ends on a block boundary (the TPM does not pad).
    [Theory]
    [InlineData(Key128, Ciphertext128, 1)]
    [InlineData(Key128, Ciphertext128, 15)]
    [InlineData(Key128, Ciphertext128, 17)]
    [InlineData(Key128, Ciphertext128, 33)]
    [InlineData(Key128, Ciphertext128, 63)]
    [InlineData(Key256, Ciphertext256, 5)]
    [InlineData(Key256, Ciphertext256, 31)]
    [InlineData(Key256, Ciphertext256, 50)]
    public void Encrypt_of_a_prefix_ending_in_a_partial_block_is_the_same_prefix_of_the_sp800_38a_ciphertext(string key, string ciphertext, int length)
    {
        var data = Convert.FromHexString(Plaintext)[..length];

        AesCfb.Encrypt(Convert.FromHexString(key), Convert.FromHexString(Iv), data);

        Assert.Equal(ciphertext[..(2 * length)], Convert.ToHexStringLower(data));
    }

    [Theory]
    [InlineData(Key128, Ciphertext128, 1)]
    [InlineData(Key128, Ciphertext128, 17)]
    [InlineData(Key128, Ciphertext128, 63)]
    [InlineData(Key256, Ciphertext256, 31)]
    public void Decrypt_of_a_prefix_ending_in_a_partial_block_is_the_same_prefix_of_the_sp800_38a_plaintext(string key, string ciphertext, int length)
    {
        var data = Convert.FromHexString(ciphertext)[..length];

        AesCfb.Decrypt(Convert.FromHexString(key), Convert.FromHexString(Iv), data);

        Assert.Equal(Plaintext[..(2 * length)], Convert.ToHexStringLower(data));
    }

    // Negative checks: one flipped key bit, and one flipped IV bit, change every block of the
    // F.3.13 / F.3.17 ciphertext (the first block is AES_K(IV) xor P1 and each later block feeds on it).
    [Theory]
    [InlineData(Key128, Ciphertext128, 0)]
    [InlineData(Key128, Ciphertext128, 127)]
    [InlineData(Key256, Ciphertext256, 0)]
    [InlineData(Key256, Ciphertext256, 200)]
    public void Encrypt_with_one_key_bit_flipped_differs_from_the_sp800_38a_ciphertext_in_every_block(string key, string ciphertext, int bit)
    {
        var k = Convert.FromHexString(key);
        k[bit / 8] ^= (byte)(0x80 >> (bit % 8));
        var data = Convert.FromHexString(Plaintext);

        AesCfb.Encrypt(k, Convert.FromHexString(Iv), data);

        var expected = Convert.FromHexString(ciphertext);
        for (int block = 0; block < 4; block++)
        {
            Assert.NotEqual(expected.AsSpan(16 * block, 16).ToArray(), data.AsSpan(16 * block, 16).ToArray());
        }
    }

    [Fact]
    public void Encrypt_with_one_iv_bit_flipped_differs_from_the_sp800_38a_ciphertext()
    {
        var iv = Convert.FromHexString(Iv);
        iv[15] ^= 0x01;
        var data = Convert.FromHexString(Plaintext);

        AesCfb.Encrypt(Convert.FromHexString(Key128), iv, data);

        Assert.NotEqual(Ciphertext128, Convert.ToHexStringLower(data));
    }
}

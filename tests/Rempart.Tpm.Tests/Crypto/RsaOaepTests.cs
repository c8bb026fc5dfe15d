using System.Runtime.Versioning;
using System.Security.Cryptography;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Tpm.Tests.Crypto;

/// <summary>
/// RSA-OAEP with a label (<see cref="SecretSharing.RsaOaepEncrypt"/>): the public-key operation by
/// OpenSSL gives exactly BigInteger's ciphertext (raw RSA is deterministic: one encoding, both
/// operations), and what it makes opens with <c>openssl pkeyutl -decrypt</c> and the label. The
/// real-TPM checks are in Interop/ObjectCommandTests.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class RsaOaepTests
{
    [Fact]
    public void The_OpenSSL_operation_is_available_in_this_process()
    {
        Assert.Null(OpenSslRsa.Unavailable);
    }

    [Theory]
    [InlineData(2048, 0u)]
    [InlineData(2048, 3u)]
    [InlineData(3072, 65537u)]
    [InlineData(4096, 0u)]
    public void OpenSSL_and_BigInteger_give_the_same_ciphertext_for_random_messages(int bits, uint exponent)
    {
        using var rsa = RSA.Create();
        rsa.ImportParameters(Generate(bits, exponent == 0 ? 65537u : exponent));
        var key = Public(rsa, exponent);
        var n = ((TpmBufferId)key.Unique).Buffer;
        uint e = ((TpmsRsaParms)key.Parameters).EffectiveExponent;
        for (int i = 0; i < 16; i++)
        {
            var message = RandomNumberGenerator.GetBytes(1 + (i * 13 % 64));
            var em = SecretSharing.OaepEncode(TpmAlgId.Sha256, n.Length, message, "REMPART");
            var c = OpenSslRsa.PublicOperation(n, e, em);
            Assert.Equal(SecretSharing.RsaepBigInteger(n, e, em), c);
            if (i == 0)
            {
                // And the private key gives the encoding back (.NET's OAEP cannot take the label; raw RSA can).
                Assert.Equal(em, Raw(rsa, c));
            }
        }
    }

    [Theory]
    [InlineData("REMPART")]
    [InlineData("rempart/release/v1/0123456789abcdef0123456789abcdef")]
    [InlineData("")]
    public void A_ciphertext_decrypts_with_openssl_pkeyutl_and_the_label(string label)
    {
        using var rsa = RSA.Create(2048);
        var key = Public(rsa, 0);
        var dir = Directory.CreateTempSubdirectory("rempart-oaep-").FullName;
        try
        {
            // A throw-away test key, in a private temporary folder, removed below.
            File.WriteAllText(Path.Combine(dir, "priv.pem"), PemEncoding.WriteString("PRIVATE KEY", rsa.ExportPkcs8PrivateKey()));
            var labelHex = Convert.ToHexStringLower([.. System.Text.Encoding.ASCII.GetBytes(label), 0]);
            for (int i = 0; i < 3; i++)
            {
                var message = RandomNumberGenerator.GetBytes(32 + i);
                File.WriteAllBytes(Path.Combine(dir, "c.bin"), SecretSharing.RsaOaepEncrypt(key, message, label));
                Tool.Run("openssl", ["pkeyutl", "-decrypt", "-inkey", "priv.pem", "-in", "c.bin", "-out", "m.bin",
                    "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256",
                    "-pkeyopt", $"rsa_oaep_label:{labelHex}"], cwd: dir).Ok();
                Assert.Equal(message, File.ReadAllBytes(Path.Combine(dir, "m.bin")));
                // Another label does not open it.
                var wrong = Tool.Run("openssl", ["pkeyutl", "-decrypt", "-inkey", "priv.pem", "-in", "c.bin", "-out", "m.bin",
                    "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256",
                    "-pkeyopt", $"rsa_oaep_label:{labelHex}01"], cwd: dir);
                Assert.NotEqual(0, wrong.ExitCode);
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Parallel_encryptions_stay_right()
    {
        using var rsa = RSA.Create(2048);
        var key = Public(rsa, 0);
        var n = ((TpmBufferId)key.Unique).Buffer;
        int wrong = 0;
        Parallel.For(0, 200, new ParallelOptions { MaxDegreeOfParallelism = 8 }, _ =>
        {
            var em = SecretSharing.OaepEncode(TpmAlgId.Sha256, n.Length, RandomNumberGenerator.GetBytes(32), "REMPART");
            if (!Raw(rsa, OpenSslRsa.PublicOperation(n, 65537, em)).AsSpan().SequenceEqual(em))
            {
                Interlocked.Increment(ref wrong);
            }
        });
        Assert.Equal(0, wrong);
    }

    [Fact]
    public void Imported_keys_are_found_by_modulus_and_exponent_and_more_keys_than_the_cache_holds_stay_right()
    {
        // RSAEP needs no factors: random odd moduli. The same n with another e is another key.
        var moduli = Enumerable.Range(0, 300).Select(_ =>
        {
            var n = RandomNumberGenerator.GetBytes(256);
            n[0] |= 0x80;
            n[^1] |= 1;
            return n;
        }).ToArray();
        for (int round = 0; round < 2; round++)
        {
            foreach (var (n, i) in moduli.Select((n, i) => (n, i)))
            {
                uint e = i % 3 == 0 ? 3u : 65537u;
                var em = RandomNumberGenerator.GetBytes(256);
                em[0] = 0;
                Assert.Equal(SecretSharing.RsaepBigInteger(n, e, em), OpenSslRsa.PublicOperation(n, e, em));
                if (i < 4)
                {
                    uint other = e == 3 ? 65537u : 3u;
                    Assert.Equal(SecretSharing.RsaepBigInteger(n, other, em), OpenSslRsa.PublicOperation(n, other, em));
                }
            }
        }
    }

    [Fact]
    public void An_encoded_message_not_below_the_modulus_is_refused_by_OpenSSL_naming_the_step()
    {
        using var rsa = RSA.Create(2048);
        var n = rsa.ExportParameters(false).Modulus!;
        var tooBig = Enumerable.Repeat((byte)0xff, n.Length).ToArray();
        var e = Assert.Throws<CryptographicException>(() => OpenSslRsa.PublicOperation(n, 65537, tooBig));
        Assert.Contains("EVP_PKEY_encrypt", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => OpenSslRsa.PublicOperation(n, 65537, new byte[n.Length - 1]));
    }

    /// <summary>An unrestricted RSA decryption key's public area, as a TPM would give it (exponent 0: 65537).</summary>
    private static TpmtPublic Public(RSA rsa, uint exponent)
    {
        var p = rsa.ExportParameters(false);
        return new TpmtPublic(TpmAlgId.Rsa, TpmAlgId.Sha256, TpmaObject.Decrypt | TpmaObject.UserWithAuth, [],
            new TpmsRsaParms(TpmtSymDef.Null, TpmtScheme.Null, (ushort)(p.Modulus!.Length * 8), exponent), new TpmBufferId(p.Modulus));
    }

    /// <summary>A key pair with the given public exponent (.NET generates only 65537).</summary>
    private static RSAParameters Generate(int bits, uint e)
    {
        using var rsa = RSA.Create(bits);
        if (e == 65537)
        {
            return rsa.ExportParameters(true);
        }
        // openssl genpkey can: RSA with e = 3 for the small-exponent case.
        var dir = Directory.CreateTempSubdirectory("rempart-rsa-e-").FullName;
        try
        {
            Tool.Run("openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", $"rsa_keygen_bits:{bits}", "-pkeyopt", $"rsa_keygen_pubexp:{e}", "-out", "k.pem"], cwd: dir).Ok();
            using var k = RSA.Create();
            k.ImportFromPem(File.ReadAllText(Path.Combine(dir, "k.pem")));
            return k.ExportParameters(true);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>RSADP without padding with the private key (m = c^d mod n), as BigInteger, padded to k bytes.</summary>
    private static byte[] Raw(RSA rsa, byte[] c)
    {
        var p = rsa.ExportParameters(true);
        var d = new System.Numerics.BigInteger(p.D, isUnsigned: true, isBigEndian: true);
        var n = new System.Numerics.BigInteger(p.Modulus, isUnsigned: true, isBigEndian: true);
        var m = System.Numerics.BigInteger.ModPow(new System.Numerics.BigInteger(c, isUnsigned: true, isBigEndian: true), d, n)
            .ToByteArray(isUnsigned: true, isBigEndian: true);
        return [.. new byte[p.Modulus!.Length - m.Length], .. m];
    }
}

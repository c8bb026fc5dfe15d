using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.KeyProtection.Tests;

/// <summary>
/// The primitives and the whole unwrap reproduced by code nobody here wrote: RFC 5869's vectors,
/// OpenSSL 3 (<c>pkeyutl -derive</c> for Z, <c>kdf HKDF</c> for the KEK and the VM keys), and an
/// independent Python reader (pyca/cryptography) written from docs/key-protector.md. A missing tool
/// fails the test.
/// </summary>
public sealed class CrossCheckTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-kp-").FullName;
    private readonly SoftwareGuardianKeys _guardian = new("guardian-1");
    private readonly OwnerKey _owner = OwnerKey.Generate();

    public void Dispose()
    {
        _guardian.Dispose();
        _owner.Dispose();
        Directory.Delete(_dir, true);
    }

    private string F(string name) => Path.Combine(_dir, name);

    /// <summary>RFC 5869 appendix A, test cases 1-3 (SHA-256); case 3 is the empty-salt convention every Rempart HKDF uses.</summary>
    [Theory]
    [InlineData("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")]
    [InlineData("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f",
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87")]
    [InlineData("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "", "",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")]
    public void Hkdf_sha256_matches_rfc5869(string ikm, string salt, string info, string okm)
    {
        var output = new byte[okm.Length / 2];
        HKDF.DeriveKey(HashAlgorithmName.SHA256, Convert.FromHexString(ikm), output, Convert.FromHexString(salt), Convert.FromHexString(info));
        Assert.Equal(okm, Convert.ToHexStringLower(output));
    }

    [Fact]
    public void Z_and_the_kek_of_a_guardian_wrap_match_openssl()
    {
        var (kp, vmk) = KeyProtector.Create("vm-1", KeyProtectorTests.GroupA, _owner.PublicKey, [_guardian.Metadata()]);
        vmk.Dispose();
        var wrap = kp.Guardians[0];
        File.WriteAllText(F("guardian.pem"), _guardian.PrivatePem(wrap.Kid));
        File.WriteAllText(F("epk.pem"), PemEncoding.WriteString("PUBLIC KEY", wrap.EphemeralPublicKey));

        Tool.Run("openssl", ["pkeyutl", "-derive", "-inkey", F("guardian.pem"), "-peerkey", F("epk.pem"), "-out", F("z.bin")]).Ok();
        var z = File.ReadAllBytes(F("z.bin"));
        Assert.Equal(48, z.Length);
        Assert.Equal(Convert.ToHexStringLower(z), Convert.ToHexStringLower(_guardian.DeriveSharedSecret(wrap.Kid, wrap.EphemeralPublicKey)));

        var info = EcdhEsWrap.KdfInfo(wrap.Kid, wrap.EphemeralPublicKey, kp.HeaderDigest());
        var theirs = OpensslHkdf("SHA384", z, info, 32);
        var ours = new byte[32];
        EcdhEsWrap.DeriveKek(z, wrap.Kid, wrap.EphemeralPublicKey, kp.HeaderDigest(), ours);
        Assert.Equal(theirs, Convert.ToHexStringLower(ours));
    }

    [Fact]
    public void Vm_keys_match_openssl_hkdf_sha256()
    {
        var (_, vmk) = KeyProtector.Create("vm-1", KeyProtectorTests.GroupA, _owner.PublicKey, [_guardian.Metadata()]);
        using (vmk)
        {
            foreach (var label in new[] { VmKeys.Vtpm, VmKeys.Nvram, VmKeys.Disk("root"), VmKeys.Snapshot("s-2030.01.01"), VmKeys.Migration("m_1") })
            {
                var expected = OpensslHkdf("SHA256", vmk.Bytes.ToArray(), Encoding.ASCII.GetBytes("rempart/vm-key/v1/" + label), 32);
                Assert.Equal(expected, Convert.ToHexStringLower(vmk.Derive(label)));
            }
            Assert.Equal(OpensslHkdf("SHA256", vmk.Bytes.ToArray(), Encoding.ASCII.GetBytes("rempart/vm-key/v1/vtpm"), 64), Convert.ToHexStringLower(vmk.Derive("vtpm", 64)));
        }
    }

    [Fact]
    public void An_independent_python_reader_opens_the_guardian_and_owner_wraps_and_checks_the_mac()
    {
        var python = Tool.Run("python3", ["-c", "import cryptography; print(cryptography.__version__)"]);
        Assert.True(python.ExitCode == 0, "python3 with the 'cryptography' package is required for this cross-check: " + python.Stderr);

        var other = new SoftwareGuardianKeys("guardian-2");
        var (kp, vmk) = KeyProtector.Create("vm-1", new ReleasePolicy(ShieldingLevel.EncryptionSupported, ["b", "a"]), _owner.PublicKey, [other.Metadata(), _guardian.Metadata()]);
        using (vmk)
        using (other)
        {
            File.WriteAllBytes(F("vm.kp"), kp.ToJsonBytes());
            File.WriteAllText(F("guardian.pem"), _guardian.PrivatePem(_guardian.Active.Kid));
            File.WriteAllText(F("owner.key"), _owner.ToEncryptedPem("owner passphrase"));
            var script = Path.Combine(AppContext.BaseDirectory, "kp_unwrap.py");

            var g = Tool.Run("python3", [script, F("vm.kp"), "guardian", F("guardian.pem")]);
            Assert.True(g.ExitCode == 0, g.Stderr);
            var gj = JsonNode.Parse(g.Stdout)!;
            Assert.Equal(Convert.ToHexStringLower(vmk.Bytes), gj["vmk"]!.GetValue<string>());
            Assert.Equal(Convert.ToHexStringLower(kp.HeaderDigest()), gj["headerDigest"]!.GetValue<string>());
            Assert.Equal(Convert.ToHexStringLower(vmk.Derive(VmKeys.Disk("d1"))), gj["disk/d1"]!.GetValue<string>());

            // The owner key file (PBES2, PBKDF2-SHA256, AES-256-CBC) is read by OpenSSL through pyca.
            var o = Tool.Run("python3", [script, F("vm.kp"), "owner", F("owner.key"), "owner passphrase"]);
            Assert.True(o.ExitCode == 0, o.Stderr);
            Assert.Equal(Convert.ToHexStringLower(vmk.Bytes), JsonNode.Parse(o.Stdout)!["vmk"]!.GetValue<string>());

            // And it refuses what we refuse: a policy edit (tag) and a MAC edit.
            File.WriteAllText(F("edited.kp"), kp.ToJson().Replace("[\"a\",\"b\"]", "[\"a\",\"c\"]", StringComparison.Ordinal));
            Assert.NotEqual(0, Tool.Run("python3", [script, F("edited.kp"), "guardian", F("guardian.pem")]).ExitCode);
            var doc = JsonNode.Parse(kp.ToJson())!;
            var mac = Base64Url.DecodeFromChars(doc["mac"]!.GetValue<string>());
            mac[0] ^= 1;
            doc["mac"] = Base64Url.EncodeToString(mac);
            File.WriteAllText(F("mac.kp"), doc.ToJsonString());
            var bad = Tool.Run("python3", [script, F("mac.kp"), "owner", F("owner.key"), "owner passphrase"]);
            Assert.NotEqual(0, bad.ExitCode);
            Assert.Contains("kp.integrity", bad.Stderr);
        }
    }

    [Fact]
    public void The_owner_key_file_is_encrypted_pkcs8_with_600000_pbkdf2_sha256_iterations_per_openssl()
    {
        File.WriteAllText(F("owner.key"), _owner.ToEncryptedPem("pw-12345678"));
        var asn1 = Tool.Run("openssl", ["asn1parse", "-in", F("owner.key")]).Ok().Stdout;
        Assert.Contains("PBES2", asn1);
        Assert.Contains("PBKDF2", asn1);
        Assert.Contains("aes-256-cbc", asn1);
        Assert.Contains("hmacWithSHA256", asn1);
        Assert.Contains(":0927C0", asn1); // 600,000
        var pub = Tool.Run("openssl", ["pkey", "-in", F("owner.key"), "-passin", "pass:pw-12345678", "-pubout"]).Ok().Stdout;
        Assert.Equal(_owner.PublicKey.ToPem().Trim(), pub.Trim());
        Assert.NotEqual(0, Tool.Run("openssl", ["pkey", "-in", F("owner.key"), "-passin", "pass:wrong", "-pubout"]).ExitCode);
    }

    private static string OpensslHkdf(string digest, byte[] ikm, byte[] info, int length) =>
        Tool.Run("openssl", ["kdf", "-keylen", length.ToString(System.Globalization.CultureInfo.InvariantCulture), "-kdfopt", $"digest:{digest}",
                "-kdfopt", "hexkey:" + Convert.ToHexStringLower(ikm), "-kdfopt", "hexinfo:" + Convert.ToHexStringLower(info), "HKDF"])
            .Ok().Stdout.Trim().Replace(":", "", StringComparison.Ordinal).ToLowerInvariant();
}

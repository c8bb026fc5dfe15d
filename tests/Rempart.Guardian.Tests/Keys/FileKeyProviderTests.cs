using System.Security.Cryptography;
using System.Text;
using Rempart.Guardian.Keys;
using Rempart.KeyProtection;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Guardian.Tests.Keys;

/// <summary>The file provider: encrypted PKCS#8 keys in the data folder, kept across restarts, refused with the wrong secret.</summary>
public sealed class FileKeyProviderTests : IDisposable
{
    private static readonly byte[] Secret = "file-provider-test-secret-0123456789"u8.ToArray();
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-filekeys-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void First_start_makes_keys_that_a_restart_finds_again_and_that_work()
    {
        string signingKid, activeKid;
        byte[] peerZ;
        using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        using (var p = FileKeyProvider.Open(_dir, Secret))
        {
            Assert.Equal("file", p.Kind);
            signingKid = p.SigningKid;
            KeyChecks.KidFollowsTheRule(p.SigningKid, p.SigningPublicKey);
            var active = Assert.Single(p.EncryptionKeys);
            Assert.Equal(GuardianKeyStatus.Active, active.Status);
            Assert.Equal(active, p.ActiveKey with { SubjectPublicKeyInfo = active.SubjectPublicKeyInfo });
            KeyChecks.KidFollowsTheRule(active.Kid, active.SubjectPublicKeyInfo);
            activeKid = active.Kid;
            KeyChecks.EcdhMatchesPeer(p, active);
            KeyChecks.SignatureVerifies(p);
            peerZ = p.DeriveSharedSecret(activeKid, peer.ExportSubjectPublicKeyInfo());
        }
        using (var p = FileKeyProvider.Open(_dir, Secret))
        {
            Assert.Equal(signingKid, p.SigningKid);
            Assert.Equal(activeKid, Assert.Single(p.EncryptionKeys).Kid);
            Assert.Equal(peerZ, p.DeriveSharedSecret(activeKid, peer.ExportSubjectPublicKeyInfo()));
            KeyChecks.SignatureVerifies(p);
        }
        // The private keys are files only their owner can read, in a folder only its owner can enter.
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.Combine(_dir, "keys")));
        var files = Directory.GetFiles(Path.Combine(_dir, "keys"));
        Assert.Equal(3, files.Length); // signing key, one encryption key, the registry: no temporary file left behind
        foreach (var f in files)
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(f));
        }
    }

    [Fact]
    public void The_wrong_secret_is_refused_with_keys_secret_wrong_and_a_message_that_names_the_fix()
    {
        using (FileKeyProvider.Open(_dir, Secret))
        {
        }
        var wrong = "another-secret-of-enough-length"u8.ToArray();
        var e = KeyChecks.Throws("keys.secret.wrong", () => FileKeyProvider.Open(_dir, wrong).Dispose());
        Assert.Contains("REMPART_GUARDIAN_SECRET", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(Encoding.UTF8.GetString(wrong), e.Message, StringComparison.Ordinal);
        KeyChecks.Throws("keys.secret.short", () => FileKeyProvider.Open(_dir, "short"u8).Dispose());
    }

    [Fact]
    public void Key_files_are_standard_encrypted_PKCS8_that_openssl_opens_with_the_secret_only()
    {
        using var p = FileKeyProvider.Open(_dir, Secret);
        var scalars = p.ExportPrivateScalars();
        var pass = Path.Combine(_dir, "pass");
        File.WriteAllBytes(pass, Secret);
        foreach (var (file, kid) in new[] { ("signing-key.p8", p.SigningKid), ($"enc-{p.ActiveKey.Kid}.p8", p.ActiveKey.Kid) })
        {
            var path = Path.Combine(_dir, "keys", file);
            Assert.Contains("PBES2", Tool.Run("openssl", ["asn1parse", "-inform", "DER", "-in", path]).Ok().Stdout, StringComparison.Ordinal);
            var text = Tool.Run("openssl", ["pkey", "-inform", "DER", "-in", path, "-passin", "file:" + pass, "-noout", "-text"]).Ok().Stdout;
            // openssl prints priv: as colon-separated hex; it must be the scalar the provider uses.
            var priv = text[(text.IndexOf("priv:", StringComparison.Ordinal) + 5)..text.IndexOf("pub:", StringComparison.Ordinal)];
            var hex = new string([.. priv.Where(Uri.IsHexDigit)]);
            Assert.Equal(Convert.ToHexStringLower(scalars[kid]), hex.TrimStart('0').PadLeft(scalars[kid].Length * 2, '0'));
            var refused = Tool.Run("openssl", ["pkey", "-inform", "DER", "-in", path, "-passin", "pass:not-the-secret-at-all", "-noout"]);
            Assert.NotEqual(0, refused.ExitCode);
        }
        var kdf = Tool.Run("openssl", ["asn1parse", "-inform", "DER", "-in", Path.Combine(_dir, "keys", "signing-key.p8")]).Ok().Stdout;
        Assert.Contains("PBKDF2", kdf, StringComparison.Ordinal);
        Assert.Contains("aes-256-cbc", kdf, StringComparison.Ordinal);
        Assert.Contains("hmacWithSHA256", kdf, StringComparison.Ordinal);
        Assert.Contains(":0927C0", kdf, StringComparison.Ordinal); // 600,000 iterations
    }

    [Fact]
    public void A_data_folder_from_before_key_providers_keeps_its_token_signing_key()
    {
        using var legacy = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var bytes = legacy.ExportEncryptedPkcs8PrivateKey(Secret, new PbeParameters(PbeEncryptionAlgorithm.Aes256Cbc, HashAlgorithmName.SHA256, 600_000));
        File.WriteAllBytes(Path.Combine(_dir, FileKeyProvider.LegacySigningKeyFile), bytes);
        var spki = legacy.ExportSubjectPublicKeyInfo();

        // The wrong secret leaves the old file where it is.
        KeyChecks.Throws("keys.secret.wrong", () => FileKeyProvider.Open(_dir, "another-secret-of-enough-length"u8).Dispose());
        Assert.True(File.Exists(Path.Combine(_dir, FileKeyProvider.LegacySigningKeyFile)));

        using (var p = FileKeyProvider.Open(_dir, Secret))
        {
            Assert.Equal(spki, p.SigningPublicKey);
        }
        Assert.False(File.Exists(Path.Combine(_dir, FileKeyProvider.LegacySigningKeyFile)));
        Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(_dir, "keys", "signing-key.p8")));
        using (var p = FileKeyProvider.Open(_dir, Secret))
        {
            Assert.Equal(spki, p.SigningPublicKey);
        }
    }

    [Fact]
    public void Rotation_keeps_old_keys_unwrapping_until_retired_and_survives_a_restart()
    {
        using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        GuardianKeyInfo first, second;
        byte[] zFirst;
        using (var p = FileKeyProvider.Open(_dir, Secret))
        {
            first = p.ActiveKey;
            zFirst = p.DeriveSharedSecret(first.Kid, peer.ExportSubjectPublicKeyInfo());
            second = p.Rotate();
            Assert.NotEqual(first.Kid, second.Kid);
            Assert.Equal(second.Kid, p.ActiveKey.Kid);
            Assert.Equal(GuardianKeyStatus.Retiring, p.EncryptionKeys.Single(k => k.Kid == first.Kid).Status);
            // A retiring key still unwraps: the same Z as before rotation.
            Assert.Equal(zFirst, p.DeriveSharedSecret(first.Kid, peer.ExportSubjectPublicKeyInfo()));
            KeyChecks.EcdhMatchesPeer(p, p.ActiveKey);
            KeyChecks.Throws("keys.retire.active", () => p.Retire(second.Kid));
            KeyChecks.Throws("keys.unknown-kid", () => p.Retire("AAAAAAAAAAAAAAAAAAAAAA"));
            KeyChecks.Throws("keys.unknown-kid", () => p.DeriveSharedSecret("AAAAAAAAAAAAAAAAAAAAAA", peer.ExportSubjectPublicKeyInfo()));
        }
        using (var p = FileKeyProvider.Open(_dir, Secret))
        {
            Assert.Equal(second.Kid, p.ActiveKey.Kid);
            Assert.Equal(zFirst, p.DeriveSharedSecret(first.Kid, peer.ExportSubjectPublicKeyInfo()));
            Assert.Equal(GuardianKeyStatus.Retired, p.Retire(first.Kid).Status);
            KeyChecks.Throws("keys.retired", () => p.DeriveSharedSecret(first.Kid, peer.ExportSubjectPublicKeyInfo()));
            Assert.Equal(GuardianKeyStatus.Retired, p.Retire(first.Kid).Status); // idempotent
        }
        using (var p = FileKeyProvider.Open(_dir, Secret))
        {
            Assert.Equal([GuardianKeyStatus.Retired, GuardianKeyStatus.Active], p.EncryptionKeys.Select(k => k.Status));
            KeyChecks.Throws("keys.retired", () => p.DeriveSharedSecret(first.Kid, peer.ExportSubjectPublicKeyInfo()));
            // A retired key is never decrypted again: it is not in memory.
            Assert.False(p.ExportPrivateScalars().ContainsKey(first.Kid));
        }
    }

    [Fact]
    public void A_key_file_the_registry_does_not_name_is_adopted_and_a_named_key_that_is_missing_stops_the_start()
    {
        string kid;
        using (var p = FileKeyProvider.Open(_dir, Secret))
        {
            kid = p.ActiveKey.Kid;
        }
        // A crash before the registry was written (or a lost registry): the key is kept, as retiring.
        File.Delete(Path.Combine(_dir, "keys", "file-keys.json"));
        using (var p = FileKeyProvider.Open(_dir, Secret))
        {
            Assert.Equal(GuardianKeyStatus.Retiring, p.EncryptionKeys.Single(k => k.Kid == kid).Status);
            Assert.NotEqual(kid, p.ActiveKey.Kid);
            KeyChecks.EcdhMatchesPeer(p, p.EncryptionKeys.Single(k => k.Kid == kid));
        }
        File.Delete(Path.Combine(_dir, "keys", $"enc-{kid}.p8"));
        var e = KeyChecks.Throws("keys.missing", () => FileKeyProvider.Open(_dir, Secret).Dispose());
        Assert.Contains(kid, e.Message, StringComparison.Ordinal);
    }

    public static TheoryData<string, byte[]> BadPeers()
    {
        using var p256 = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        using var bp384 = ECDiffieHellman.Create(ECCurve.NamedCurves.brainpoolP384r1);
        using var good = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        var offCurve = good.ExportSubjectPublicKeyInfo();
        offCurve[^1] ^= 1; // last byte of Y: the point leaves the curve
        var trailing = good.ExportSubjectPublicKeyInfo().Append((byte)0).ToArray();
        return new()
        {
            { "p256", p256.ExportSubjectPublicKeyInfo() },
            { "brainpool-p384", bp384.ExportSubjectPublicKeyInfo() },
            { "off-curve", offCurve },
            { "trailing-byte", trailing },
            { "garbage", [0x30, 0x03, 0x02, 0x01, 0x00] },
            { "empty", [] },
        };
    }

    [Theory]
    [MemberData(nameof(BadPeers))]
    public void A_bad_peer_key_is_refused(string name, byte[] spki)
    {
        using var p = FileKeyProvider.Open(_dir, Secret);
        var e = KeyChecks.Throws("keys.peer.invalid", () => p.DeriveSharedSecret(p.ActiveKey.Kid, spki));
        Assert.False(string.IsNullOrEmpty(name + e.Message));
    }
}

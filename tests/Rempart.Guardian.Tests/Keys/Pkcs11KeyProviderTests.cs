using System.Security.Cryptography;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using Rempart.Guardian.Keys;
using Rempart.KeyProtection;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Guardian.Tests.Keys;

/// <summary>
/// The PKCS#11 provider end to end on SoftHSM2: keys generated in the token and kept there,
/// checked with an independent tool (pkcs11-tool), ECDH and ECDSA checked against .NET and openssl.
/// </summary>
public sealed class Pkcs11KeyProviderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-pkcs11keys-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private Pkcs11KeyProvider Open(string label, string? pinFile = null) =>
        Pkcs11KeyProvider.Open(_dir, SoftHsm.Module, label, pinFile ?? SoftHsm.PinFile(label));

    [Fact]
    public void Keys_are_generated_in_the_token_sensitive_and_never_extractable_and_the_token_does_the_math()
    {
        const string label = "roundtrip";
        using var p = Open(label);
        Assert.Equal("pkcs11", p.Kind);
        var active = p.ActiveKey;
        KeyChecks.KidFollowsTheRule(active.Kid, active.SubjectPublicKeyInfo);
        KeyChecks.KidFollowsTheRule(p.SigningKid, p.SigningPublicKey);
        KeyChecks.EcdhMatchesPeer(p, active);
        KeyChecks.SignatureVerifies(p);

        // An independent PKCS#11 client (OpenSC's pkcs11-tool) sees both private keys, sensitive and never extractable.
        var listing = Tool.Run("pkcs11-tool", ["--module", SoftHsm.Module, "--token-label", label, "--login", "--pin", SoftHsm.Pin(label), "--list-objects", "--type", "privkey"],
            env: SoftHsm.Env).Ok().Stdout;
        var objects = listing.Split("Private Key Object", StringSplitOptions.RemoveEmptyEntries).Where(o => o.Contains("label:", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, objects.Count);
        Assert.Contains(objects, o => o.Contains(Pkcs11KeyProvider.SigningLabel, StringComparison.Ordinal) && o.Contains("sign", StringComparison.Ordinal));
        Assert.Contains(objects, o => o.Contains(Pkcs11KeyProvider.EncryptionLabel, StringComparison.Ordinal) && o.Contains("derive", StringComparison.Ordinal));
        foreach (var o in objects)
        {
            Assert.Contains("sensitive, always sensitive, never extractable, local", o, StringComparison.Ordinal);
        }

        // Asking the token for the private value (C_GetAttributeValue CKA_VALUE) gets nothing.
        foreach (var kid in new[] { active.Kid, p.SigningKid })
        {
            var handle = p.PrivateKeyHandle(kid);
            var value = p.Run(s => s.GetAttributeValue(handle, [CKA.CKA_VALUE, CKA.CKA_EXTRACTABLE, CKA.CKA_SENSITIVE]));
            Assert.True(value[0].CannotBeRead, "the token revealed CKA_VALUE of a private key");
            Assert.False(value[1].GetValueAsBool());
            Assert.True(value[2].GetValueAsBool());
            // ... nor wraps it out under a key of ours (CKR_KEY_UNEXTRACTABLE).
            var e = Assert.Throws<KeyProviderException>(() => p.Run(s =>
            {
                var f = new Pkcs11InteropFactories();
                var wrapping = s.GenerateKey(f.MechanismFactory.Create(CKM.CKM_AES_KEY_GEN),
                [
                    f.ObjectAttributeFactory.Create(CKA.CKA_TOKEN, false),
                    f.ObjectAttributeFactory.Create(CKA.CKA_VALUE_LEN, 32UL),
                    f.ObjectAttributeFactory.Create(CKA.CKA_WRAP, true),
                ]);
                try
                {
                    return s.WrapKey(f.MechanismFactory.Create(CKM.CKM_AES_KEY_WRAP_PAD), wrapping, handle); // SoftHSM2 wraps private keys (PKCS#8) only this way
                }
                finally
                {
                    s.DestroyObject(wrapping);
                }
            }));
            Assert.Equal(CKR.CKR_KEY_UNEXTRACTABLE, ((Pkcs11Exception)e.InnerException!).RV);
        }

        // The derived secret was a session object, destroyed: no secret key is left in the token.
        var secrets = p.Run(s => s.FindAllObjects([new Pkcs11InteropFactories().ObjectAttributeFactory.Create(CKA.CKA_CLASS, CKO.CKO_SECRET_KEY)]));
        Assert.Empty(secrets);
    }

    [Fact]
    public void Keys_are_found_again_after_a_restart_and_rotation_keeps_old_keys_until_retired()
    {
        const string label = "restart";
        using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        string signingKid;
        GuardianKeyInfo first, second;
        byte[] z;
        using (var p = Open(label))
        {
            signingKid = p.SigningKid;
            first = p.ActiveKey;
            z = p.DeriveSharedSecret(first.Kid, peer.ExportSubjectPublicKeyInfo());
            second = p.Rotate();
            Assert.Equal(GuardianKeyStatus.Retiring, p.EncryptionKeys.Single(k => k.Kid == first.Kid).Status);
            KeyChecks.EcdhMatchesPeer(p, second);
        }
        using (var p = Open(label))
        {
            Assert.Equal(signingKid, p.SigningKid);
            Assert.Equal(second.Kid, p.ActiveKey.Kid);
            Assert.Equal(z, p.DeriveSharedSecret(first.Kid, peer.ExportSubjectPublicKeyInfo()));
            KeyChecks.SignatureVerifies(p);
            KeyChecks.Throws("keys.retire.active", () => p.Retire(second.Kid));
            p.Retire(first.Kid);
            KeyChecks.Throws("keys.retired", () => p.DeriveSharedSecret(first.Kid, peer.ExportSubjectPublicKeyInfo()));
        }
        using (var p = Open(label))
        {
            KeyChecks.Throws("keys.retired", () => p.DeriveSharedSecret(first.Kid, peer.ExportSubjectPublicKeyInfo()));
            KeyChecks.EcdhMatchesPeer(p, p.ActiveKey);
        }
        // pkcs11-tool counts three private keys: one signing, two encryption (the retired one is kept, unusable).
        var listing = Tool.Run("pkcs11-tool", ["--module", SoftHsm.Module, "--token-label", label, "--login", "--pin", SoftHsm.Pin(label), "--list-objects", "--type", "privkey"],
            env: SoftHsm.Env).Ok().Stdout;
        Assert.Equal(3, listing.Split("Private Key Object").Length - 1);
    }

    [Fact]
    public void Concurrent_derivations_and_signatures_all_come_out_right()
    {
        using var p = Open("concurrent");
        var key = p.ActiveKey;
        using var pub = ECDsa.Create();
        pub.ImportSubjectPublicKeyInfo(p.SigningPublicKey, out _);
        using var guardian = ECDiffieHellman.Create();
        guardian.ImportSubjectPublicKeyInfo(key.SubjectPublicKeyInfo, out _);
        Parallel.For(0, 64, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
            Assert.Equal(peer.DeriveRawSecretAgreement(guardian.PublicKey), p.DeriveSharedSecret(key.Kid, peer.ExportSubjectPublicKeyInfo()));
            var data = BitConverter.GetBytes(i);
            Assert.True(pub.VerifyData(data, p.SignEs256(data), HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation));
        });
    }

    [Fact]
    public void Configuration_mistakes_are_refused_with_stable_ids_and_no_PIN_in_the_message()
    {
        const string label = "wrongpin";
        var wrong = Path.Combine(_dir, "wrong-pin");
        File.WriteAllText(wrong, "not-the-pin-7731\n");
        File.SetUnixFileMode(wrong, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var e = KeyChecks.Throws("keys.pkcs11.pin-wrong", () => Open(label, wrong).Dispose());
        Assert.DoesNotContain("not-the-pin-7731", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(SoftHsm.Pin(label), e.Message, StringComparison.Ordinal);
        Assert.Contains("--pkcs11-pin-file", e.Message, StringComparison.Ordinal);

        File.SetUnixFileMode(wrong, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
        KeyChecks.Throws("keys.pkcs11.pin-file", () => Open(label, wrong).Dispose());
        KeyChecks.Throws("keys.pkcs11.pin-file", () => Open(label, Path.Combine(_dir, "no-such-file")).Dispose());
        var missing = KeyChecks.Throws("keys.pkcs11.token-not-found", () => Pkcs11KeyProvider.Open(_dir, SoftHsm.Module, "no-such-token", SoftHsm.PinFile(label)).Dispose());
        Assert.Contains("'roundtrip'", missing.Message, StringComparison.Ordinal); // names the tokens it saw
        KeyChecks.Throws("keys.pkcs11.module", () => Pkcs11KeyProvider.Open(_dir, "/nonexistent/libpkcs11.so", label, SoftHsm.PinFile(label)).Dispose());
        KeyChecks.Throws("keys.pkcs11.module", () => Pkcs11KeyProvider.Open(_dir, "/etc/hostname", label, SoftHsm.PinFile(label)).Dispose());

        // The right PIN still works (a wrong one did not lock the token).
        using var p = Open(label);
        KeyChecks.SignatureVerifies(p);
    }

    [Fact]
    public void A_key_the_registry_names_that_is_not_in_the_token_stops_the_start()
    {
        const string label = "rotation";
        string kid;
        using (var p = Open(label))
        {
            kid = p.ActiveKey.Kid;
        }
        // Same data folder, another token (as if the HSM were swapped): the registry's keys are missing.
        var e = KeyChecks.Throws("keys.missing", () => Open("wrongpin").Dispose());
        Assert.Contains("signing key", e.Message, StringComparison.Ordinal);
        using (var p = Open(label))
        {
            Assert.Equal(kid, p.ActiveKey.Kid);
        }
    }
}

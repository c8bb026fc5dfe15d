using System.Security.Cryptography;
using System.Text.Json.Nodes;

namespace Rempart.KeyProtection.Tests;

/// <summary>Key protectors made, serialized, parsed and opened by the Guardian and the owner.</summary>
public sealed class KeyProtectorTests : IDisposable
{
    private readonly SoftwareGuardianKeys _guardian = new("guardian-1");
    private readonly SoftwareGuardianKeys _other = new("guardian-2");
    private readonly OwnerKey _owner = OwnerKey.Generate();

    public void Dispose()
    {
        _guardian.Dispose();
        _other.Dispose();
        _owner.Dispose();
    }

    internal static ReleasePolicy GroupA => new(ShieldingLevel.Shielded, ["group-a"]);

    private (KeyProtector Kp, VmMasterKey Vmk) Make(string vmId = "vm-1", ReleasePolicy? policy = null) =>
        KeyProtector.Create(vmId, policy ?? GroupA, _owner.PublicKey, [_guardian.Metadata(), _other.Metadata()]);

    [Fact]
    public void Create_serialize_parse_then_the_guardian_and_the_owner_get_the_same_vmk()
    {
        var (kp, vmk) = Make(policy: new ReleasePolicy(ShieldingLevel.EncryptionSupported, ["zeta", "alpha"]));
        using (vmk)
        {
            var parsed = KeyProtector.Parse(kp.ToJsonBytes());
            Assert.Equal(kp.ToJson(), parsed.ToJson());
            Assert.Equal(1, parsed.Version);
            Assert.Equal(kp.KpId, parsed.KpId);
            Assert.Equal("vm-1", parsed.VmId);
            Assert.Equal(ShieldingLevel.EncryptionSupported, parsed.Policy.Shielding);
            Assert.Equal(["alpha", "zeta"], parsed.Policy.HostGroups);
            Assert.Equal(_owner.PublicKey.Kid, parsed.Owner.Kid);
            Assert.Equal(["guardian-1", "guardian-2"], parsed.Guardians.Select(g => g.GuardianId));
            Assert.Equal([_guardian.Active.Kid, _other.Active.Kid], parsed.Guardians.Select(g => g.Kid));
            Assert.Equal(EcdhEsWrap.Algorithm, parsed.Owner.Algorithm);

            using var byGuardian = parsed.UnwrapWithGuardian(_guardian, _guardian.Keys);
            using var byOther = parsed.UnwrapWithGuardian(_other, _other.Keys);
            using var byOwner = parsed.RecoverWithOwner(_owner);
            Assert.True(vmk.Bytes.SequenceEqual(byGuardian.Bytes));
            Assert.True(vmk.Bytes.SequenceEqual(byOther.Bytes));
            Assert.True(vmk.Bytes.SequenceEqual(byOwner.Bytes));
            parsed.VerifyIntegrity(byOwner);
        }
    }

    [Fact]
    public void The_serialized_form_holds_no_secret_and_reads_as_documented()
    {
        var (kp, vmk) = Make();
        using (vmk)
        {
            var json = kp.ToJson();
            Assert.DoesNotContain(Convert.ToBase64String(vmk.Bytes.ToArray()).TrimEnd('='), json);
            Assert.DoesNotContain(Convert.ToHexStringLower(vmk.Bytes), json);
            Assert.Contains("\"alg\":\"ECDH-ES-P384+HKDF-SHA384+A256GCM\"", json);
            var doc = JsonNode.Parse(json)!.AsObject();
            Assert.Equal(["version", "kpId", "vmId", "policy", "createdAt", "owner", "guardians", "mac"], doc.Select(p => p.Key));
            Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", doc["createdAt"]!.GetValue<string>());
            Assert.Equal(["kid", "alg", "epk", "nonce", "ct", "tag"], doc["owner"]!.AsObject().Select(p => p.Key));
            Assert.Equal(["guardianId", "kid", "alg", "epk", "nonce", "ct", "tag"], doc["guardians"]![0]!.AsObject().Select(p => p.Key));
        }
    }

    [Fact]
    public void Every_key_protector_has_its_own_vmk_kpid_and_ephemeral_keys()
    {
        var (a, va) = Make();
        var (b, vb) = Make();
        using (va)
        using (vb)
        {
            Assert.False(va.Bytes.SequenceEqual(vb.Bytes));
            Assert.NotEqual(a.KpId, b.KpId);
            Assert.False(a.Owner.EphemeralPublicKey.AsSpan().SequenceEqual(b.Owner.EphemeralPublicKey));
            Assert.False(a.Owner.EphemeralPublicKey.AsSpan().SequenceEqual(a.Guardians[0].EphemeralPublicKey));
        }
    }

    [Fact]
    public void A_guardian_whose_keys_are_not_in_the_kp_gets_kp_no_guardian_key()
    {
        using var stranger = new SoftwareGuardianKeys("guardian-3");
        var (kp, vmk) = Make();
        vmk.Dispose();
        var e = Assert.Throws<KeyProtectorException>(() => kp.UnwrapWithGuardian(stranger, stranger.Keys));
        Assert.Equal("kp.no-guardian-key", e.Id);
        Assert.Contains("guardian-1/", e.Message);
    }

    [Fact]
    public void Owner_recovery_works_offline_and_refuses_another_owner_key()
    {
        var (kp, vmk) = Make();
        using (vmk)
        {
            // Offline: only the file and the owner key file; no Guardian object exists in this step.
            var pem = _owner.ToEncryptedPem("correct horse battery staple");
            using var reloaded = OwnerKey.FromEncryptedPem(pem, "correct horse battery staple");
            using var recovered = KeyProtector.Parse(kp.ToJsonBytes()).RecoverWithOwner(reloaded);
            Assert.True(vmk.Bytes.SequenceEqual(recovered.Bytes));

            using var stranger = OwnerKey.Generate();
            var e = Assert.Throws<KeyProtectorException>(() => kp.RecoverWithOwner(stranger));
            Assert.Equal("kp.owner.wrong-key", e.Id);
        }
    }

    [Fact]
    public void The_owner_key_file_is_pbkdf2_600000_aes256_and_a_wrong_passphrase_is_owner_key_decrypt()
    {
        var pem = _owner.ToEncryptedPem("pass-phrase-1");
        Assert.StartsWith("-----BEGIN ENCRYPTED PRIVATE KEY-----", pem);
        var e = Assert.Throws<OwnerKeyException>(() => OwnerKey.FromEncryptedPem(pem, "pass-phrase-2"));
        Assert.Equal("owner.key.decrypt", e.Id);
        Assert.Equal("owner.key.format", Assert.Throws<OwnerKeyException>(() => OwnerKey.FromEncryptedPem("hello", "x")).Id);
        Assert.Equal("owner.key.format", Assert.Throws<OwnerKeyException>(() => OwnerKey.FromEncryptedPem(_owner.PublicKey.ToPem(), "x")).Id);
        using var p256 = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        var wrongCurve = p256.ExportEncryptedPkcs8PrivateKeyPem("x", new PbeParameters(PbeEncryptionAlgorithm.Aes256Cbc, HashAlgorithmName.SHA256, 1000));
        Assert.Equal("owner.key.format", Assert.Throws<OwnerKeyException>(() => OwnerKey.FromEncryptedPem(wrongCurve, "x")).Id);

        var pub = OwnerPublicKey.FromPem(_owner.PublicKey.ToPem());
        Assert.Equal(_owner.PublicKey.Kid, pub.Kid);
        Assert.Equal("owner.public.format", Assert.Throws<OwnerKeyException>(() => OwnerPublicKey.FromPem(pem)).Id);
        Assert.Equal("owner.public.format", Assert.Throws<OwnerKeyException>(() => new OwnerPublicKey(p256.ExportSubjectPublicKeyInfo())).Id);
    }

    [Fact]
    public void A_wrap_moved_from_another_kp_is_refused()
    {
        var (kp1, v1) = Make("vm-1");
        var (kp2, v2) = Make("vm-1");
        v1.Dispose();
        v2.Dispose();
        var doc1 = JsonNode.Parse(kp1.ToJson())!;
        var doc2 = JsonNode.Parse(kp2.ToJson())!;

        // The Guardian wrap of KP2 in KP1: the wrap's AEAD is bound to KP2's header digest.
        var movedGuardian = doc1.DeepClone();
        movedGuardian["guardians"]![0] = doc2["guardians"]![0]!.DeepClone();
        var e = Assert.Throws<KeyProtectorException>(() => KeyProtector.Parse(movedGuardian.ToJsonString()).UnwrapWithGuardian(_guardian, _guardian.Keys));
        Assert.Equal("kp.wrap.tag", e.Id);

        // KP2's header over KP1's wraps and MAC (same VM id and policy: only kpId and time differ).
        var movedHeader = doc1.DeepClone();
        movedHeader["kpId"] = doc2["kpId"]!.GetValue<string>();
        movedHeader["createdAt"] = doc2["createdAt"]!.GetValue<string>();
        e = Assert.Throws<KeyProtectorException>(() => KeyProtector.Parse(movedHeader.ToJsonString()).UnwrapWithGuardian(_guardian, _guardian.Keys));
        Assert.Equal("kp.wrap.tag", e.Id);
        e = Assert.Throws<KeyProtectorException>(() => KeyProtector.Parse(movedHeader.ToJsonString()).RecoverWithOwner(_owner));
        Assert.Equal("kp.wrap.tag", e.Id);

        // The owner wrap of KP2 in KP1: the Guardian's own wrap still opens, the MAC catches it.
        var movedOwner = doc1.DeepClone();
        movedOwner["owner"] = doc2["owner"]!.DeepClone();
        e = Assert.Throws<KeyProtectorException>(() => KeyProtector.Parse(movedOwner.ToJsonString()).UnwrapWithGuardian(_guardian, _guardian.Keys));
        Assert.Equal("kp.integrity", e.Id);
    }

    [Fact]
    public void Removing_or_reordering_guardian_wraps_is_caught_by_the_mac()
    {
        var (kp, vmk) = Make();
        vmk.Dispose();
        var doc = JsonNode.Parse(kp.ToJson())!;
        var removed = doc.DeepClone();
        removed["guardians"]!.AsArray().RemoveAt(1);
        var e = Assert.Throws<KeyProtectorException>(() => KeyProtector.Parse(removed.ToJsonString()).UnwrapWithGuardian(_guardian, _guardian.Keys));
        Assert.Equal("kp.integrity", e.Id);

        var swapped = doc.DeepClone();
        var g = swapped["guardians"]!.AsArray();
        var first = g[0]!.DeepClone();
        g[0] = g[1]!.DeepClone();
        g[1] = first;
        e = Assert.Throws<KeyProtectorException>(() => KeyProtector.Parse(swapped.ToJsonString()).RecoverWithOwner(_owner));
        Assert.Equal("kp.integrity", e.Id);

        var renamed = doc.DeepClone();
        renamed["guardians"]![0]!["guardianId"] = "guardian-9";
        e = Assert.Throws<KeyProtectorException>(() => KeyProtector.Parse(renamed.ToJsonString()).UnwrapWithGuardian(_guardian, _guardian.Keys));
        Assert.Equal("kp.integrity", e.Id);
    }

    [Fact]
    public void A_wrap_of_an_attackers_vmk_made_for_this_header_opens_but_fails_the_mac()
    {
        // The header is public, so anyone can wrap a VMK of their own for it with the Guardian's
        // public key; only the MAC (keyed from the real VMK) tells the Guardian the wraps disagree.
        var (kp, vmk) = Make();
        vmk.Dispose();
        var attackerVmk = RandomNumberGenerator.GetBytes(32);
        var forged = EcdhEsWrap.Seal(attackerVmk, _guardian.Active.SubjectPublicKeyInfo, WrapRecipient.Guardian, "guardian-1", kp.HeaderDigest());
        var doc = JsonNode.Parse(kp.ToJson())!;
        doc["guardians"]![0]!["epk"] = System.Buffers.Text.Base64Url.EncodeToString(forged.EphemeralPublicKey);
        doc["guardians"]![0]!["nonce"] = System.Buffers.Text.Base64Url.EncodeToString(forged.Nonce);
        doc["guardians"]![0]!["ct"] = System.Buffers.Text.Base64Url.EncodeToString(forged.Ciphertext);
        doc["guardians"]![0]!["tag"] = System.Buffers.Text.Base64Url.EncodeToString(forged.Tag);
        var e = Assert.Throws<KeyProtectorException>(() => KeyProtector.Parse(doc.ToJsonString()).UnwrapWithGuardian(_guardian, _guardian.Keys));
        Assert.Equal("kp.integrity", e.Id);
    }

    [Fact]
    public void Create_refuses_bad_arguments()
    {
        var md = _guardian.Metadata();
        Assert.Throws<ArgumentException>(() => KeyProtector.Create("", GroupA, _owner.PublicKey, [md]));
        Assert.Throws<ArgumentException>(() => KeyProtector.Create("vm 1", GroupA, _owner.PublicKey, [md]));
        Assert.Throws<ArgumentException>(() => KeyProtector.Create("vm-1", GroupA, _owner.PublicKey, Array.Empty<GuardianMetadata>()));
        Assert.Throws<ArgumentException>(() => KeyProtector.Create("vm-1", GroupA, _owner.PublicKey, [md, md]));
        Assert.Throws<ArgumentException>(() => new ReleasePolicy(ShieldingLevel.Shielded, []));
        Assert.Throws<ArgumentException>(() => new ReleasePolicy(ShieldingLevel.Shielded, ["a", "a"]));
        Assert.Throws<ArgumentException>(() => new ReleasePolicy(ShieldingLevel.Shielded, ["a b"]));
        var retiring = _guardian.Active with { Status = GuardianKeyStatus.Retiring };
        Assert.Throws<ArgumentException>(() => KeyProtector.Create("vm-1", GroupA, _owner.PublicKey, [new GuardianRecipient("guardian-1", retiring)]));
        var lying = _guardian.Active with { Kid = _other.Active.Kid };
        Assert.Throws<ArgumentException>(() => KeyProtector.Create("vm-1", GroupA, _owner.PublicKey, [new GuardianRecipient("guardian-1", lying)]));
    }

    [Fact]
    public void A_disposed_vmk_is_wiped_and_unusable()
    {
        var (_, vmk) = Make();
        vmk.Dispose();
        Assert.Throws<ObjectDisposedException>(() => vmk.Bytes.ToArray());
        Assert.Equal("VmMasterKey(***)", vmk.ToString());
    }
}

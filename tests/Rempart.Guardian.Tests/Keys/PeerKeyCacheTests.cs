using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Rempart.Guardian.Keys;
using Rempart.KeyProtection;

namespace Rempart.Guardian.Tests.Keys;

/// <summary>
/// The cache of imported peer keys (key protectors' ephemeral keys): a hit is the same key the
/// import gives, a refused key is never kept, the oldest entry goes first, and a key protector
/// changed after its ephemeral key was cached is refused exactly as before.
/// </summary>
public sealed class PeerKeyCacheTests : IDisposable
{
    private static readonly byte[] Secret = "peer-key-cache-test-secret-0123456789"u8.ToArray();
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-peerkeys-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void The_same_bytes_give_the_same_imported_key_and_the_same_secret_as_a_fresh_import()
    {
        using var p = FileKeyProvider.Open(_dir, Secret);
        using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        var spki = peer.ExportSubjectPublicKeyInfo();

        var first = p.Peers.Get(spki);
        Assert.Same(first, p.Peers.Get(spki.ToArray()));
        Assert.Equal(1, p.Peers.Count);
        Assert.Equal(peer.ExportParameters(false).Q.X, first.Point[1..49].ToArray());

        using var guardian = ECDiffieHellman.Create();
        guardian.ImportSubjectPublicKeyInfo(p.ActiveKey.SubjectPublicKeyInfo, out _);
        var expected = peer.DeriveRawSecretAgreement(guardian.PublicKey);
        // First (import) and second (cached) derivations: the Z the peer computes on its side.
        Assert.Equal(expected, p.DeriveSharedSecret(p.ActiveKey.Kid, spki));
        Assert.Equal(expected, p.DeriveSharedSecret(p.ActiveKey.Kid, spki));
        Assert.Equal(1, p.Peers.Count);
    }

    [Theory]
    [MemberData(nameof(FileKeyProviderTests.BadPeers), MemberType = typeof(FileKeyProviderTests))]
    public void A_refused_key_is_not_kept_and_is_refused_again(string name, byte[] spki)
    {
        using var p = FileKeyProvider.Open(_dir, Secret);
        KeyChecks.Throws("keys.peer.invalid", () => p.DeriveSharedSecret(p.ActiveKey.Kid, spki));
        var e = KeyChecks.Throws("keys.peer.invalid", () => p.DeriveSharedSecret(p.ActiveKey.Kid, spki));
        Assert.Equal(0, p.Peers.Count);
        Assert.False(string.IsNullOrEmpty(name + e.Message));
    }

    [Fact]
    public void The_least_recently_used_key_goes_first_and_the_size_stays_bounded()
    {
        var cache = new PeerKeyCache(2);
        var spkis = Enumerable.Range(0, 3).Select(_ =>
        {
            using var k = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
            return k.ExportSubjectPublicKeyInfo();
        }).ToArray();
        var a = cache.Get(spkis[0]);
        var b = cache.Get(spkis[1]);
        Assert.Same(a, cache.Get(spkis[0])); // a is now the most recent
        cache.Get(spkis[2]);                  // b goes
        Assert.Equal(2, cache.Count);
        Assert.Same(a, cache.Get(spkis[0]));
        Assert.NotSame(b, cache.Get(spkis[1]));
        Assert.Equal(2, cache.Count);
    }

    [Fact]
    public void A_capacity_of_zero_imports_every_time()
    {
        var cache = new PeerKeyCache(0);
        using var k = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        var spki = k.ExportSubjectPublicKeyInfo();
        Assert.NotSame(cache.Get(spki), cache.Get(spki));
        Assert.Equal(0, cache.Count);
    }

    [Fact]
    public void Parallel_derivations_with_one_cached_key_all_give_the_right_secret()
    {
        using var p = FileKeyProvider.Open(_dir, Secret);
        var peers = Enumerable.Range(0, 4).Select(_ => ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384)).ToArray();
        try
        {
            using var guardian = ECDiffieHellman.Create();
            guardian.ImportSubjectPublicKeyInfo(p.ActiveKey.SubjectPublicKeyInfo, out _);
            var spkis = peers.Select(k => k.ExportSubjectPublicKeyInfo()).ToArray();
            var expected = peers.Select(k => k.DeriveRawSecretAgreement(guardian.PublicKey)).ToArray();
            var kid = p.ActiveKey.Kid;
            Parallel.For(0, 200, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
                Assert.Equal(expected[i % 4], p.DeriveSharedSecret(kid, spkis[i % 4])));
            Assert.Equal(4, p.Peers.Count);
        }
        finally
        {
            foreach (var k in peers)
            {
                k.Dispose();
            }
        }
    }

    /// <summary>A field of the key protector changed, its ephemeral key kept (so the import is a cache hit).</summary>
    public static TheoryData<string, Action<JsonObject>> Tampers => new()
    {
        { "vmId", kp => kp["vmId"] = "vm-other" },
        { "hostGroups", kp => kp["policy"]!["hostGroups"] = new JsonArray("group-b") },
        { "guardian ct", kp => kp["guardians"]![0]!["ct"] = Flip(kp["guardians"]![0]!["ct"]!.GetValue<string>()) },
        { "guardian tag", kp => kp["guardians"]![0]!["tag"] = Flip(kp["guardians"]![0]!["tag"]!.GetValue<string>()) },
        { "mac", kp => kp["mac"] = Flip(kp["mac"]!.GetValue<string>()) },
    };

    [Theory]
    [MemberData(nameof(Tampers))]
    public void A_key_protector_changed_after_its_key_was_cached_is_still_refused(string field, Action<JsonObject> tamper)
    {
        using var p = FileKeyProvider.Open(_dir, Secret);
        var metadata = GuardianMetadata.Create("g-test", "test", null, p.EncryptionKeys, p.SigningPublicKey, DateTimeOffset.UtcNow, d => p.SignEs256(d));
        using var owner = OwnerKey.Generate();
        var (kp, vmk) = KeyProtector.Create("vm-1", new ReleasePolicy(ShieldingLevel.Shielded, ["group-a"]), owner.PublicKey, [metadata]);
        using (vmk)
        using (var opened = kp.UnwrapWithGuardian(p, p.EncryptionKeys))
        {
            Assert.Equal(vmk.Bytes.ToArray(), opened.Bytes.ToArray());
        }
        Assert.Equal(1, p.Peers.Count);

        var json = JsonNode.Parse(kp.ToJson())!.AsObject();
        tamper(json);
        var changed = KeyProtector.Parse(Encoding.UTF8.GetBytes(json.ToJsonString()));
        var e = Assert.ThrowsAny<KeyProtectorException>(() => changed.UnwrapWithGuardian(p, p.EncryptionKeys));
        Assert.StartsWith("kp.", e.Id, StringComparison.Ordinal);
        Assert.Equal(1, p.Peers.Count); // the hit was used: the refusal came from the checks after the derivation
        Assert.False(string.IsNullOrEmpty(field));
    }

    private static string Flip(string base64Url)
    {
        var bytes = System.Buffers.Text.Base64Url.DecodeFromChars(base64Url);
        bytes[0] ^= 1;
        return System.Buffers.Text.Base64Url.EncodeToString(bytes);
    }
}

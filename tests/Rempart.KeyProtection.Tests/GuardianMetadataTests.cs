using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;

namespace Rempart.KeyProtection.Tests;

/// <summary>Guardian metadata: signed, verified on parse, pinned by fingerprint.</summary>
public sealed class GuardianMetadataTests : IDisposable
{
    private readonly SoftwareGuardianKeys _guardian = new("guardian-1");

    public void Dispose() => _guardian.Dispose();

    [Fact]
    public void Metadata_round_trips_and_its_fingerprint_is_the_sha256_of_the_signing_spki()
    {
        var old = _guardian.Active;
        _guardian.Rotate();
        var md = _guardian.Metadata("Guardian de Test — Paris", new Uri("https://guardian.example:8443/"));
        var parsed = GuardianMetadata.Parse(md.ToJsonBytes());
        Assert.Equal(md.ToJson(), parsed.ToJson());
        Assert.Equal("guardian-1", parsed.GuardianId);
        Assert.Equal("Guardian de Test — Paris", parsed.Name);
        Assert.Equal("https://guardian.example:8443/", parsed.Url!.OriginalString);
        Assert.Equal(md.IssuedAt, parsed.IssuedAt);
        Assert.Equal(0, parsed.IssuedAt.Millisecond);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(_guardian.SigningSpki)), parsed.Fingerprint);
        Assert.Equal(KeyIds.Of(_guardian.SigningSpki), parsed.SigningKeyId);
        Assert.True(parsed.SigningKeySpki.SequenceEqual(_guardian.SigningSpki));
        Assert.Equal(2, parsed.EncryptionKeys.Count);
        Assert.Equal(_guardian.Active.Kid, parsed.ActiveKey.Kid);
        Assert.True(parsed.ActiveKey.SubjectPublicKeyInfo.AsSpan().SequenceEqual(_guardian.Active.SubjectPublicKeyInfo));
        Assert.Equal(GuardianKeyStatus.Retiring, parsed.EncryptionKeys.Single(k => k.Kid == old.Kid).Status);
        Assert.Equal(StrictJsonTime(_guardian.Active.CreatedAt), parsed.ActiveKey.CreatedAt);

        var noUrl = GuardianMetadata.Parse(_guardian.Metadata().ToJson().Replace("\"url\": \"https://guardian.example:8443/\",", "", StringComparison.Ordinal));
        Assert.Equal(_guardian.GuardianId, noUrl.GuardianId);
    }

    [Fact]
    public void Metadata_without_url_is_signed_differently_from_metadata_with_it()
    {
        var with = GuardianMetadata.Create("g", "n", new Uri("https://a.example"), _guardian.Keys, _guardian.SigningSpki, DateTimeOffset.UnixEpoch, d => _guardian.SignEs256(d));
        var without = GuardianMetadata.Create("g", "n", null, _guardian.Keys, _guardian.SigningSpki, DateTimeOffset.UnixEpoch, d => _guardian.SignEs256(d));
        Assert.DoesNotContain("\"url\"", without.ToJson());
        Assert.False(with.SignedBytes().AsSpan().SequenceEqual(without.SignedBytes()));
        GuardianMetadata.Parse(without.ToJsonBytes());
    }

    [Theory]
    [InlineData("name")]
    [InlineData("url")]
    [InlineData("guardianId")]
    [InlineData("issuedAt")]
    [InlineData("status")]
    [InlineData("active-key")]
    [InlineData("signing-key")]
    [InlineData("signature")]
    public void Tampered_metadata_fails_its_signature(string what)
    {
        var doc = JsonNode.Parse(_guardian.Metadata().ToJson())!;
        switch (what)
        {
            case "name": doc["name"] = "Evil Guardian"; break;
            case "url": doc["url"] = "https://evil.example"; break;
            case "guardianId": doc["guardianId"] = "guardian-2"; break;
            case "issuedAt": doc["issuedAt"] = "2001-01-01T00:00:00Z"; break;
            case "status":
                _guardian.Rotate();
                doc = JsonNode.Parse(_guardian.Metadata().ToJson())!;
                doc["encryptionKeys"]![0]!["status"] = "retired";
                break;
            case "active-key":
            {
                // The attacker's own P-384 key, with a consistent kid, in place of the Guardian's.
                using var evil = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
                var spki = evil.ExportSubjectPublicKeyInfo();
                doc["encryptionKeys"]![0]!["spki"] = System.Buffers.Text.Base64Url.EncodeToString(spki);
                doc["encryptionKeys"]![0]!["kid"] = KeyIds.Of(spki);
                break;
            }
            case "signing-key":
            {
                using var evil = ECDsa.Create(ECCurve.NamedCurves.nistP256);
                var spki = evil.ExportSubjectPublicKeyInfo();
                doc["signingKey"]!["spki"] = System.Buffers.Text.Base64Url.EncodeToString(spki);
                doc["signingKey"]!["kid"] = KeyIds.Of(spki);
                break;
            }
            case "signature":
            {
                var sig = System.Buffers.Text.Base64Url.DecodeFromChars(doc["signature"]!.GetValue<string>());
                sig[10] ^= 1;
                doc["signature"] = System.Buffers.Text.Base64Url.EncodeToString(sig);
                break;
            }
        }
        var e = Assert.Throws<GuardianMetadataException>(() => GuardianMetadata.Parse(doc.ToJsonString()));
        Assert.Equal("metadata.signature", e.Id);
    }

    [Fact]
    public void An_attacker_who_re_signs_with_their_own_key_is_caught_by_the_fingerprint()
    {
        using var attacker = new SoftwareGuardianKeys("guardian-1");
        var genuine = _guardian.Metadata();
        var forged = GuardianMetadata.Parse(attacker.Metadata().ToJsonBytes()); // verifies: self-consistent
        genuine.RequireFingerprint(genuine.Fingerprint);
        genuine.RequireFingerprint(genuine.Fingerprint.ToUpperInvariant());
        genuine.RequireFingerprint(string.Join(':', Convert.FromHexString(genuine.Fingerprint).Select(b => b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture))));
        var e = Assert.Throws<GuardianMetadataException>(() => forged.RequireFingerprint(genuine.Fingerprint));
        Assert.Equal("metadata.fingerprint", e.Id);
        Assert.Contains(forged.Fingerprint, e.Message);
    }

    [Fact]
    public void Every_single_bit_flip_of_metadata_is_refused()
    {
        var original = _guardian.Metadata().ToJsonBytes();
        int format = 0, signature = 0, whitespace = 0;
        for (int i = 0; i < original.Length; i++)
        {
            for (int bit = 0; bit < 8; bit++)
            {
                var m = (byte[])original.Clone();
                m[i] ^= (byte)(1 << bit);
                try
                {
                    var md = GuardianMetadata.Parse(m);
                    // Only whitespace may change (the JSON is indented): then the content is the same.
                    Assert.True(char.IsWhiteSpace((char)original[i]) && char.IsWhiteSpace((char)m[i]), $"bit {bit} at {i} accepted");
                    Assert.Equal(Encoding.UTF8.GetString(original), md.ToJson());
                    whitespace++;
                }
                catch (GuardianMetadataFormatException)
                {
                    format++;
                }
                catch (GuardianMetadataException e) when (e.Id == "metadata.signature")
                {
                    signature++;
                }
            }
        }
        Assert.True(format > 0 && signature > 0, $"format {format}, signature {signature}, whitespace {whitespace}");
    }

    [Fact]
    public void Create_verifies_the_signer_matches_the_signing_key_and_needs_one_active_key()
    {
        using var other = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var e = Assert.Throws<GuardianMetadataException>(() => GuardianMetadata.Create("guardian-1", "n", null, _guardian.Keys, _guardian.SigningSpki, DateTimeOffset.UtcNow,
            d => other.SignData(d, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation)));
        Assert.Equal("metadata.signature", e.Id);

        var noActive = _guardian.Keys.Select(k => k with { Status = GuardianKeyStatus.Retiring });
        Assert.Throws<ArgumentException>(() => GuardianMetadata.Create("guardian-1", "n", null, noActive, _guardian.SigningSpki, DateTimeOffset.UtcNow, d => _guardian.SignEs256(d)));
        Assert.Throws<ArgumentException>(() => GuardianMetadata.Create("guardian 1", "n", null, _guardian.Keys, _guardian.SigningSpki, DateTimeOffset.UtcNow, d => _guardian.SignEs256(d)));
        Assert.Throws<ArgumentException>(() => GuardianMetadata.Create("guardian-1", "n", new Uri("ftp://x.example"), _guardian.Keys, _guardian.SigningSpki, DateTimeOffset.UtcNow, d => _guardian.SignEs256(d)));
    }

    [Theory]
    [InlineData("version", "version")]
    [InlineData("unknown", "extra")]
    [InlineData("missing-signature", "signature")]
    [InlineData("kid-mismatch", "encryptionKeys[0].kid")]
    [InlineData("two-active", "encryptionKeys")]
    [InlineData("status-other", "encryptionKeys[0].status")]
    [InlineData("url-relative", "url")]
    [InlineData("spki-p256", "encryptionKeys[0].spki")]
    public void Malformed_metadata_is_one_format_exception_naming_the_field(string what, string field)
    {
        var old = _guardian.Active;
        _guardian.Rotate();
        var doc = JsonNode.Parse(_guardian.Metadata().ToJson())!.AsObject();
        var k0 = doc["encryptionKeys"]![0]!;
        switch (what)
        {
            case "version": doc["version"] = 2; break;
            case "unknown": doc["extra"] = true; break;
            case "missing-signature": doc.Remove("signature"); break;
            case "kid-mismatch": k0["kid"] = _guardian.Active.Kid; break;
            case "two-active": k0["status"] = "active"; break;
            case "status-other": k0["status"] = "revoked"; break;
            case "url-relative": doc["url"] = "/guardian"; break;
            case "spki-p256":
            {
                using var p256 = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
                k0["spki"] = System.Buffers.Text.Base64Url.EncodeToString(p256.ExportSubjectPublicKeyInfo());
                break;
            }
        }
        Assert.Equal(old.Kid, _guardian.Keys[0].Kid);
        var e = Assert.Throws<GuardianMetadataFormatException>(() => GuardianMetadata.Parse(doc.ToJsonString()));
        Assert.Equal(field, e.Field);
    }

    private static DateTimeOffset StrictJsonTime(DateTimeOffset t) => DateTimeOffset.FromUnixTimeSeconds(t.ToUnixTimeSeconds());
}

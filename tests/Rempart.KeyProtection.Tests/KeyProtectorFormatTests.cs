using System.Text.Json.Nodes;

namespace Rempart.KeyProtection.Tests;

/// <summary>Strict parsing: each malformed case is one <see cref="KeyProtectorFormatException"/> naming the field.</summary>
public sealed class KeyProtectorFormatTests : IDisposable
{
    private readonly SoftwareGuardianKeys _guardian = new("guardian-1");
    private readonly OwnerKey _owner = OwnerKey.Generate();
    private readonly string _json;

    public KeyProtectorFormatTests()
    {
        var (kp, vmk) = KeyProtector.Create("vm-1", KeyProtectorTests.GroupA, _owner.PublicKey, [_guardian.Metadata()]);
        vmk.Dispose();
        _json = kp.ToJson();
    }

    public void Dispose()
    {
        _guardian.Dispose();
        _owner.Dispose();
    }

    /// <summary>(case, edit of the JSON tree, field the error must name).</summary>
    public static TheoryData<string, string> Cases => new()
    {
        { "version-2", "version" },
        { "version-0", "version" },
        { "version-string", "version" },
        { "version-float", "version" },
        { "version-missing", "version" },
        { "unknown-root-field", "extra" },
        { "unknown-wrap-field", "guardians[0].extra" },
        { "unknown-policy-field", "policy.extra" },
        { "missing-mac", "mac" },
        { "missing-owner", "owner" },
        { "missing-nonce", "guardians[0].nonce" },
        { "kpid-short", "kpId" },
        { "kpid-padded", "kpId" },
        { "kpid-standard-base64", "kpId" },
        { "kpid-not-base64", "kpId" },
        { "kpid-number", "kpId" },
        { "mac-long", "mac" },
        { "nonce-short", "owner.nonce" },
        { "tag-short", "guardians[0].tag" },
        { "ct-long", "owner.ct" },
        { "epk-not-on-curve", "owner.epk" },
        { "epk-p256", "owner.epk" },
        { "kid-short", "owner.kid" },
        { "kid-bad-char", "guardians[0].kid" },
        { "alg-other", "owner.alg" },
        { "vmid-empty", "vmId" },
        { "vmid-space", "vmId" },
        { "vmid-long", "vmId" },
        { "shielding-other", "policy.shielding" },
        { "groups-empty", "policy.hostGroups" },
        { "groups-duplicate", "policy.hostGroups[1]" },
        { "groups-unsorted", "policy.hostGroups[1]" },
        { "group-bad-name", "policy.hostGroups[0]" },
        { "groups-not-array", "policy.hostGroups" },
        { "guardians-empty", "guardians" },
        { "guardians-same-kid", "guardians[1].kid" },
        { "guardian-id-missing", "guardians[0].guardianId" },
        { "owner-with-guardian-id", "owner.guardianId" },
        { "created-offset", "createdAt" },
        { "created-fraction", "createdAt" },
        { "created-garbage", "createdAt" },
        { "root-array", "$" },
        { "not-json", "$" },
        { "trailing-comma", "$" },
        { "comment", "$" },
        { "oversize", "$" },
        { "bad-utf8", "$" },
        { "duplicate-field", "vmId" },
        { "duplicate-wrap-field", "owner.kid" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Malformed_key_protector_is_one_format_exception_naming_the_field(string name, string field)
    {
        var bytes = Mutate(name);
        var e = Assert.Throws<KeyProtectorFormatException>(() => KeyProtector.Parse(bytes));
        Assert.Equal(field, e.Field);
        Assert.Equal("kp.format", e.Id);
        Assert.Contains(field, e.Message);
    }

    private byte[] Mutate(string name)
    {
        var doc = JsonNode.Parse(_json)!.AsObject();
        var owner = doc["owner"]!.AsObject();
        var g0 = doc["guardians"]![0]!.AsObject();
        var policy = doc["policy"]!.AsObject();
        string? raw = null;
        switch (name)
        {
            case "version-2": doc["version"] = 2; break;
            case "version-0": doc["version"] = 0; break;
            case "version-string": doc["version"] = "1"; break;
            case "version-float": raw = _json.Replace("\"version\":1", "\"version\":1.0", StringComparison.Ordinal); break;
            case "version-missing": doc.Remove("version"); break;
            case "unknown-root-field": doc["extra"] = 1; break;
            case "unknown-wrap-field": g0["extra"] = "x"; break;
            case "unknown-policy-field": policy["extra"] = "x"; break;
            case "missing-mac": doc.Remove("mac"); break;
            case "missing-owner": doc.Remove("owner"); break;
            case "missing-nonce": g0.Remove("nonce"); break;
            case "kpid-short": doc["kpId"] = "AAAAAAAAAAAAAAAAAAAA"; break;
            case "kpid-padded": doc["kpId"] = doc["kpId"]!.GetValue<string>() + "=="; break;
            case "kpid-standard-base64": doc["kpId"] = "+/+/+/+/+/+/+/+/+/+/+w"; break;
            case "kpid-not-base64": doc["kpId"] = "!!!!!!!!!!!!!!!!!!!!!!"; break;
            case "kpid-number": doc["kpId"] = 5; break;
            case "mac-long": doc["mac"] = new string('A', 44); break;
            case "nonce-short": owner["nonce"] = "AAAAAAAAAAAAAAA"; break;
            case "tag-short": g0["tag"] = "AAAAAAAAAAAAAAAAAAAA"; break;
            case "ct-long": owner["ct"] = new string('A', 48); break;
            case "epk-not-on-curve":
            {
                var epk = System.Buffers.Text.Base64Url.DecodeFromChars(owner["epk"]!.GetValue<string>());
                epk[^1] ^= 1;
                owner["epk"] = System.Buffers.Text.Base64Url.EncodeToString(epk);
                break;
            }
            case "epk-p256":
            {
                using var p256 = System.Security.Cryptography.ECDiffieHellman.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
                owner["epk"] = System.Buffers.Text.Base64Url.EncodeToString(p256.ExportSubjectPublicKeyInfo());
                break;
            }
            case "kid-short": owner["kid"] = "abc"; break;
            case "kid-bad-char": g0["kid"] = "abcdefghijklmnopqrstu+"; break;
            case "alg-other": owner["alg"] = "RSA-OAEP-256"; break;
            case "vmid-empty": doc["vmId"] = ""; break;
            case "vmid-space": doc["vmId"] = "vm 1"; break;
            case "vmid-long": doc["vmId"] = new string('v', 129); break;
            case "shielding-other": policy["shielding"] = "none"; break;
            case "groups-empty": policy["hostGroups"] = new JsonArray(); break;
            case "groups-duplicate": policy["hostGroups"] = new JsonArray("a", "a"); break;
            case "groups-unsorted": policy["hostGroups"] = new JsonArray("b", "a"); break;
            case "group-bad-name": policy["hostGroups"] = new JsonArray("a/b"); break;
            case "groups-not-array": policy["hostGroups"] = "group-a"; break;
            case "guardians-empty": doc["guardians"] = new JsonArray(); break;
            case "guardians-same-kid": doc["guardians"]!.AsArray().Add(g0.DeepClone()); break;
            case "guardian-id-missing": g0.Remove("guardianId"); break;
            case "owner-with-guardian-id": owner["guardianId"] = "guardian-1"; break;
            case "created-offset": doc["createdAt"] = "2030-01-01T00:00:00+00:00"; break;
            case "created-fraction": doc["createdAt"] = "2030-01-01T00:00:00.5Z"; break;
            case "created-garbage": doc["createdAt"] = "2030-13-01T00:00:00Z"; break;
            case "root-array": raw = "[" + _json + "]"; break;
            case "not-json": raw = _json[..^1]; break;
            case "trailing-comma": raw = _json[..^1] + ",}"; break;
            case "comment": raw = "/* kp */" + _json; break;
            case "oversize": raw = _json[..^1] + ",\"pad\":\"" + new string('x', 70_000) + "\"}"; break;
            case "bad-utf8":
            {
                var b = System.Text.Encoding.UTF8.GetBytes(_json);
                b[b.Length - 3] = 0xC3;
                return b;
            }
            case "duplicate-field": raw = _json.Replace("\"vmId\":\"vm-1\"", "\"vmId\":\"vm-1\",\"vmId\":\"vm-2\"", StringComparison.Ordinal); break;
            case "duplicate-wrap-field":
            {
                var kid = owner["kid"]!.GetValue<string>();
                raw = _json.Replace($"\"kid\":\"{kid}\"", $"\"kid\":\"{kid}\",\"kid\":\"{kid}\"", StringComparison.Ordinal);
                break;
            }
            default: throw new ArgumentException(name);
        }
        return System.Text.Encoding.UTF8.GetBytes(raw ?? doc.ToJsonString());
    }
}

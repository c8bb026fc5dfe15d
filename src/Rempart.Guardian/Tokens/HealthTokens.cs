using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.Guardian.Keys;

namespace Rempart.Guardian.Tokens;

/// <summary>
/// Health tokens: compact JWS (RFC 7515) signed with ES256 (RFC 7518 §3.4), carrying EAR-style
/// claims (IETF draft-ietf-rats-ear: <c>ear.status</c> affirming / warning / contraindicated,
/// a trust vector, the appraisal policy id) plus the host, its group, the binding key thumbprint
/// and the quoted PCR digest. Short lifetime; every jti is recorded so it can be revoked.
/// Signatures are made by the key provider (in the HSM with PKCS#11); this class only holds the
/// public key, to verify and to publish.
/// </summary>
public sealed class HealthTokens
{
    private readonly IGuardianKeyProvider _keys;
    private readonly string _issuer;
    private readonly string _kid;
    private readonly ECParameters _public;

    /// <summary>
    /// This Guardian's public signing key, imported once: importing it costs more than the ES256
    /// verification itself (bench/README.md, "Key release"). Public, and only ever used to verify.
    /// </summary>
    private readonly ECDsa _verifier;

    public HealthTokens(IGuardianKeyProvider keys, string issuer)
    {
        _keys = keys;
        _issuer = issuer;
        _kid = keys.SigningKid;
        _verifier = ECDsa.Create();
        _verifier.ImportSubjectPublicKeyInfo(keys.SigningPublicKey, out _);
        _public = _verifier.ExportParameters(false);
    }

    public string Issue(HealthClaims claims, DateTimeOffset issuedAt, DateTimeOffset expiresAt)
    {
        var header = new JsonObject { ["alg"] = "ES256", ["typ"] = "JWT", ["kid"] = _kid };
        var payload = new JsonObject
        {
            ["iss"] = _issuer,
            ["sub"] = claims.HostId,
            ["iat"] = issuedAt.ToUnixTimeSeconds(),
            ["exp"] = expiresAt.ToUnixTimeSeconds(),
            ["jti"] = claims.Jti,
            ["eat_profile"] = "tag:rempart,2026:ear",
            ["ear.status"] = claims.Status,
            ["ear.trustworthiness-vector"] = new JsonObject
            {
                ["hardware"] = claims.Status == "affirming" ? 2 : 96,
                ["executables"] = claims.Status == "affirming" ? 2 : 96,
                ["configuration"] = claims.Status == "affirming" ? 2 : 96,
            },
            ["ear.appraisal-policy-id"] = claims.PolicyId,
            ["rempart.policy-version"] = claims.PolicyVersion,
            ["rempart.host"] = claims.HostId,
            ["rempart.group"] = claims.Group,
            ["rempart.binding-key"] = claims.BindingKeyThumbprint,
            // The binding key's TPM2B_PUBLIC: what a release wraps to (its Name is the claim above).
            ["rempart.binding-public"] = claims.BindingPublic is null ? null : B64(claims.BindingPublic),
            ["rempart.pcr-digest"] = claims.PcrDigest,
            ["rempart.reset-count"] = claims.ResetCount,
        };
        string signingInput = B64(JsonSerializer.SerializeToUtf8Bytes(header)) + "." + B64(JsonSerializer.SerializeToUtf8Bytes(payload));
        var sig = _keys.SignEs256(Encoding.ASCII.GetBytes(signingInput));
        return signingInput + "." + B64(sig);
    }

    /// <summary>Verifies signature (with this Guardian's key), algorithm and lifetime; returns the payload or null with a reason.</summary>
    public JsonObject? Validate(string token, DateTimeOffset now, out string reason)
    {
        var parts = token.Split('.');
        if (parts.Length != 3)
        {
            reason = "token.format";
            return null;
        }
        try
        {
            var header = JsonNode.Parse(Base64Url.DecodeFromChars(parts[0])) as JsonObject;
            if (header?["alg"]?.GetValue<string>() != "ES256" || header["kid"]?.GetValue<string>() != _kid)
            {
                reason = "token.key";
                return null;
            }
            var sig = Base64Url.DecodeFromChars(parts[2]);
            if (!_verifier.VerifyData(Encoding.ASCII.GetBytes(parts[0] + "." + parts[1]), sig, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation))
            {
                reason = "token.signature";
                return null;
            }
            var payload = JsonNode.Parse(Base64Url.DecodeFromChars(parts[1])) as JsonObject;
            long exp = payload?["exp"]?.GetValue<long>() ?? 0;
            if (payload is null || now.ToUnixTimeSeconds() >= exp)
            {
                reason = "token.expired";
                return null;
            }
            reason = "";
            return payload;
        }
        catch (Exception e) when (e is FormatException or JsonException or InvalidOperationException)
        {
            reason = "token.format";
            return null;
        }
    }

    /// <summary>The JWKS document (RFC 7517) relying parties use to check tokens.</summary>
    public JsonObject Jwks()
    {
        var p = _public;
        return new JsonObject
        {
            ["keys"] = new JsonArray(new JsonObject
            {
                ["kty"] = "EC",
                ["crv"] = "P-256",
                ["kid"] = _kid,
                ["use"] = "sig",
                ["alg"] = "ES256",
                ["x"] = B64(p.Q.X!),
                ["y"] = B64(p.Q.Y!),
            }),
        };
    }

    private static string B64(byte[] b) => Base64Url.EncodeToString(b);
}

/// <summary>What a health token says about a host.</summary>
public sealed record HealthClaims(string Jti, string HostId, string? Group, string Status, string PolicyId, int PolicyVersion,
    string BindingKeyThumbprint, string PcrDigest, uint ResetCount, byte[]? BindingPublic = null);

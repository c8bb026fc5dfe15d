using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Rempart.KeyProtection;

/// <summary>
/// What a Guardian publishes so tenants can build key protectors without contacting the fabric:
/// its id, name, optional URL, its P-384 encryption keys (with their status) and its ES256 signing
/// key, signed by that key over the canonical encoding (docs/key-protector.md, "Guardian metadata").
/// <para>The signature only proves the document is whole and came from the holder of the embedded
/// signing key; trust comes from the tenant comparing <see cref="Fingerprint"/> with the value the
/// fabric operator gave them out of band (<see cref="RequireFingerprint"/>). Instances exist only
/// signed (<see cref="Create"/>) or verified (<see cref="Parse(ReadOnlyMemory{byte})"/>).</para>
/// </summary>
public sealed class GuardianMetadata
{
    public const int CurrentVersion = 1;
    public const int MaxSerializedBytes = 64 * 1024;
    public const int MaxEncryptionKeys = 16;
    public const int SignatureLength = 64;
    private const string SignatureLabel = "rempart/guardian-metadata/v1";

    private static readonly string[] RootFields = ["version", "guardianId", "name", "issuedAt", "signingKey", "encryptionKeys", "signature"];
    private static readonly string[] OptionalRootFields = ["url"];
    private static readonly string[] SigningKeyFields = ["kid", "spki"];
    private static readonly string[] EncryptionKeyFields = ["kid", "spki", "status", "createdAt"];

    private readonly byte[] _signingSpki;
    private readonly byte[] _signature;

    private GuardianMetadata(string guardianId, string name, Uri? url, DateTimeOffset issuedAt, byte[] signingSpki, IReadOnlyList<GuardianKeyInfo> keys, byte[] signature)
    {
        GuardianId = guardianId;
        Name = name;
        Url = url;
        IssuedAt = issuedAt;
        _signingSpki = signingSpki;
        SigningKeyId = KeyIds.Of(signingSpki);
        EncryptionKeys = keys;
        _signature = signature;
    }

    public string GuardianId { get; }

    public string Name { get; }

    public Uri? Url { get; }

    public DateTimeOffset IssuedAt { get; }

    /// <summary>The ES256 (P-256) signing key's SPKI.</summary>
    public ReadOnlySpan<byte> SigningKeySpki => _signingSpki;

    public string SigningKeyId { get; }

    /// <summary>SHA-256 of the signing key's SPKI, lowercase hex: compare it out of band.</summary>
    public string Fingerprint => KeyIds.Fingerprint(_signingSpki);

    /// <summary>The Guardian's P-384 encryption keys, each active, retiring or retired; exactly one is active.</summary>
    public IReadOnlyList<GuardianKeyInfo> EncryptionKeys { get; }

    /// <summary>The one key new key protectors are wrapped for.</summary>
    public GuardianKeyInfo ActiveKey => EncryptionKeys.Single(k => k.Status == GuardianKeyStatus.Active);

    /// <summary>This Guardian as a key protector recipient (its active key).</summary>
    public GuardianRecipient Recipient => new(GuardianId, ActiveKey);

    /// <summary>
    /// Builds and signs metadata. <paramref name="signEs256"/> returns an IEEE P1363 ES256 signature
    /// (e.g. <see cref="IGuardianKeyOperations.SignEs256"/>); the result is verified against
    /// <paramref name="signingKeySpki"/> before it is returned, so a provider whose key does not match
    /// is caught here (<c>metadata.signature</c>). Times are kept to the second.
    /// </summary>
    public static GuardianMetadata Create(string guardianId, string name, Uri? url, IEnumerable<GuardianKeyInfo> encryptionKeys,
        ReadOnlySpan<byte> signingKeySpki, DateTimeOffset issuedAt, Func<byte[], byte[]> signEs256)
    {
        if (!KeyIds.IsName(guardianId))
        {
            throw new ArgumentException($"Guardian id '{guardianId}': 1-64 ASCII letters, digits, '.', '-' or '_'", nameof(guardianId));
        }
        if (name.Length is 0 or > 128 || name.Any(char.IsControl))
        {
            throw new ArgumentException("a Guardian name is 1-128 characters without control characters", nameof(name));
        }
        if (url is not null && !IsHttpUrl(url.OriginalString))
        {
            throw new ArgumentException("the Guardian URL must be an absolute http(s) URL", nameof(url));
        }
        using (var signing = EcKeys.TryImportP256(signingKeySpki))
        {
            _ = signing ?? throw new ArgumentException("the signing key is not a P-256 public key (SPKI)", nameof(signingKeySpki));
        }
        var keys = encryptionKeys.Select(k => k with { CreatedAt = StrictJson.TruncateToSeconds(k.CreatedAt), SubjectPublicKeyInfo = k.SubjectPublicKeyInfo.ToArray() }).ToList();
        if (CheckKeys(keys) is { } problem)
        {
            throw new ArgumentException(problem, nameof(encryptionKeys));
        }
        var unsigned = new GuardianMetadata(guardianId, name, url, StrictJson.TruncateToSeconds(issuedAt), signingKeySpki.ToArray(), keys, []);
        var signature = signEs256(unsigned.SignedBytes());
        var signed = new GuardianMetadata(guardianId, name, url, unsigned.IssuedAt, unsigned._signingSpki, keys, signature);
        return signed.SignatureValid()
            ? signed
            : throw new GuardianMetadataException("metadata.signature", "the signer's signature does not verify with the given signing key");
    }

    /// <summary>
    /// Parses and verifies: strict format (<see cref="GuardianMetadataFormatException"/>), then the
    /// signature against the embedded signing key (<c>metadata.signature</c>).
    /// </summary>
    public static GuardianMetadata Parse(ReadOnlyMemory<byte> utf8)
    {
        static Exception Error(string field, string message) => new GuardianMetadataFormatException(field, message);
        using var doc = StrictJson.Parse(utf8, MaxSerializedBytes, Error);
        var root = StrictJson.Root(doc, CurrentVersion, RootFields, OptionalRootFields, Error);
        var guardianId = root.Name("guardianId");
        var name = root.Text("name", 128);
        Uri? url = null;
        if (root.Has("url"))
        {
            var u = root.Text("url", 2048);
            url = IsHttpUrl(u) ? new Uri(u, UriKind.Absolute) : throw root.Error("url", "must be an absolute http(s) URL");
        }
        var issuedAt = root.Time("issuedAt");
        var sk = root.Object("signingKey", SigningKeyFields);
        var skKid = sk.Kid("kid");
        var skSpki = sk.Bytes("spki", EcKeys.P256SpkiLength);
        using (var signing = EcKeys.TryImportP256(skSpki))
        {
            _ = signing ?? throw sk.Error("spki", "not a P-256 public key (uncompressed point on the curve, DER SubjectPublicKeyInfo)");
        }
        if (skKid != KeyIds.Of(skSpki))
        {
            throw sk.Error("kid", "does not match the key");
        }
        var keys = new List<GuardianKeyInfo>();
        foreach (var (e, path) in root.Array("encryptionKeys", 1, MaxEncryptionKeys))
        {
            var k = root.Element(e, path, EncryptionKeyFields);
            var kid = k.Kid("kid");
            var spki = k.Bytes("spki", EcKeys.P384SpkiLength);
            if (!EcKeys.IsP384(spki))
            {
                throw k.Error("spki", "not a NIST P-384 public key (uncompressed point on the curve, DER SubjectPublicKeyInfo)");
            }
            if (kid != KeyIds.Of(spki))
            {
                throw k.Error("kid", "does not match the key");
            }
            var status = k.Text("status", 16) switch
            {
                "active" => GuardianKeyStatus.Active,
                "retiring" => GuardianKeyStatus.Retiring,
                "retired" => GuardianKeyStatus.Retired,
                _ => throw k.Error("status", "must be active, retiring or retired"),
            };
            keys.Add(new GuardianKeyInfo(kid, spki, status, k.Time("createdAt")));
        }
        if (CheckKeys(keys) is { } problem)
        {
            throw Error("encryptionKeys", problem);
        }
        var signature = root.Bytes("signature", SignatureLength);
        var md = new GuardianMetadata(guardianId, name, url, issuedAt, skSpki, keys, signature);
        return md.SignatureValid()
            ? md
            : throw new GuardianMetadataException("metadata.signature", $"the metadata of Guardian '{guardianId}' is not signed by its signing key {skKid}: it was altered");
    }

    public static GuardianMetadata Parse(string json) => Parse(Encoding.UTF8.GetBytes(json));

    /// <summary>
    /// Refuses metadata whose fingerprint is not <paramref name="expectedHex"/> (hex, case and ':' ignored):
    /// <c>metadata.fingerprint</c>.
    /// </summary>
    public void RequireFingerprint(string expectedHex)
    {
        var normalized = expectedHex.Replace(":", "", StringComparison.Ordinal).Trim().ToLowerInvariant();
        if (!CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(normalized), Encoding.ASCII.GetBytes(Fingerprint)))
        {
            throw new GuardianMetadataException("metadata.fingerprint", $"Guardian '{GuardianId}' has signing-key fingerprint {Fingerprint}, not the expected {normalized}");
        }
    }

    public byte[] ToJsonBytes()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, StrictJson.WriterOptions(indented: true)))
        {
            w.WriteStartObject();
            w.WriteNumber("version", CurrentVersion);
            w.WriteString("guardianId", GuardianId);
            w.WriteString("name", Name);
            if (Url is not null)
            {
                w.WriteString("url", Url.OriginalString);
            }
            w.WriteString("issuedAt", StrictJson.FormatTime(IssuedAt));
            w.WriteStartObject("signingKey");
            w.WriteString("kid", SigningKeyId);
            w.WriteString("spki", Base64Url.EncodeToString(_signingSpki));
            w.WriteEndObject();
            w.WriteStartArray("encryptionKeys");
            foreach (var k in EncryptionKeys)
            {
                w.WriteStartObject();
                w.WriteString("kid", k.Kid);
                w.WriteString("spki", Base64Url.EncodeToString(k.SubjectPublicKeyInfo));
                w.WriteString("status", StatusName(k.Status));
                w.WriteString("createdAt", StrictJson.FormatTime(k.CreatedAt));
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteString("signature", Base64Url.EncodeToString(_signature));
            w.WriteEndObject();
        }
        return stream.ToArray();
    }

    public string ToJson() => Encoding.UTF8.GetString(ToJsonBytes());

    /// <summary>The canonical encoding the signature covers (every field but the signature).</summary>
    internal byte[] SignedBytes()
    {
        var c = new Canonical().Text(SignatureLabel).U8(CurrentVersion).Text(GuardianId).Text(Name);
        if (Url is null)
        {
            c.U8(0);
        }
        else
        {
            c.U8(1).Text(Url.OriginalString);
        }
        c.I64(IssuedAt.ToUnixTimeSeconds()).Text(SigningKeyId).Bytes(_signingSpki).U32((uint)EncryptionKeys.Count);
        foreach (var k in EncryptionKeys)
        {
            c.Text(k.Kid).Bytes(k.SubjectPublicKeyInfo).Text(StatusName(k.Status)).I64(k.CreatedAt.ToUnixTimeSeconds());
        }
        return c.ToArray();
    }

    private bool SignatureValid()
    {
        using var key = EcKeys.TryImportP256(_signingSpki);
        return key is not null && _signature.Length == SignatureLength
            && key.VerifyData(SignedBytes(), _signature, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
    }

    private static string? CheckKeys(List<GuardianKeyInfo> keys)
    {
        if (keys.Count is 0 or > MaxEncryptionKeys)
        {
            return $"1-{MaxEncryptionKeys} encryption keys";
        }
        if (keys.FirstOrDefault(k => !EcKeys.IsP384(k.SubjectPublicKeyInfo) || k.Kid != KeyIds.Of(k.SubjectPublicKeyInfo) || !Enum.IsDefined(k.Status)) is { } bad)
        {
            return $"key {bad.Kid}: not a P-384 key whose kid matches its public key";
        }
        if (keys.Select(k => k.Kid).Distinct(StringComparer.Ordinal).Count() != keys.Count)
        {
            return "an encryption key is listed twice";
        }
        int active = keys.Count(k => k.Status == GuardianKeyStatus.Active);
        return active == 1 ? null : $"exactly one encryption key must be active (found {active})";
    }

    private static bool IsHttpUrl(string s) =>
        Uri.TryCreate(s, UriKind.Absolute, out var u) && (u.Scheme == Uri.UriSchemeHttps || u.Scheme == Uri.UriSchemeHttp) && !s.Any(char.IsWhiteSpace);

    private static string StatusName(GuardianKeyStatus s) => s switch
    {
        GuardianKeyStatus.Active => "active",
        GuardianKeyStatus.Retiring => "retiring",
        _ => "retired",
    };
}

using System.Buffers.Text;
using System.Text;
using System.Text.Json;

namespace Rempart.KeyProtection;

/// <summary>
/// The serialized form (docs/key-protector.md, "Format"): one compact JSON object, byte strings in
/// base64url without padding, times as <c>yyyy-MM-ddTHH:mm:ssZ</c>. Parsing is strict — every
/// deviation is one <see cref="KeyProtectorFormatException"/> naming the field — and checks shape
/// only: authenticity needs the VMK (<see cref="UnwrapWithGuardian"/>, <see cref="RecoverWithOwner"/>).
/// </summary>
public sealed partial class KeyProtector
{
    /// <summary>A key protector is a few kilobytes; anything above this is refused before parsing.</summary>
    public const int MaxSerializedBytes = 64 * 1024;

    private static readonly string[] RootFields = ["version", "kpId", "vmId", "policy", "createdAt", "owner", "guardians", "mac"];
    private static readonly string[] PolicyFields = ["shielding", "hostGroups"];
    private static readonly string[] OwnerWrapFields = ["kid", "alg", "epk", "nonce", "ct", "tag"];
    private static readonly string[] GuardianWrapFields = ["guardianId", "kid", "alg", "epk", "nonce", "ct", "tag"];

    public byte[] ToJsonBytes()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, StrictJson.WriterOptions(indented: false)))
        {
            w.WriteStartObject();
            w.WriteNumber("version", CurrentVersion);
            w.WriteString("kpId", KpId);
            w.WriteString("vmId", VmId);
            w.WriteStartObject("policy");
            w.WriteString("shielding", ReleasePolicy.ToWire(Policy.Shielding));
            w.WriteStartArray("hostGroups");
            foreach (var g in Policy.HostGroups)
            {
                w.WriteStringValue(g);
            }
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteString("createdAt", StrictJson.FormatTime(CreatedAt));
            w.WritePropertyName("owner");
            WriteWrap(w, Owner);
            w.WriteStartArray("guardians");
            foreach (var g in Guardians)
            {
                WriteWrap(w, g);
            }
            w.WriteEndArray();
            w.WriteString("mac", Base64Url.EncodeToString(_mac));
            w.WriteEndObject();
        }
        return stream.ToArray();
    }

    public string ToJson() => Encoding.UTF8.GetString(ToJsonBytes());

    /// <summary>Parses a serialized key protector. Throws <see cref="KeyProtectorFormatException"/> only.</summary>
    public static KeyProtector Parse(ReadOnlyMemory<byte> utf8)
    {
        static Exception Error(string field, string message) => new KeyProtectorFormatException(field, message);
        using var doc = StrictJson.Parse(utf8, MaxSerializedBytes, Error);
        var root = StrictJson.Root(doc, CurrentVersion, RootFields, [], Error);
        var kpId = root.Bytes("kpId", KpIdLength);
        var vmId = root.Name("vmId", MaxVmIdLength);

        var p = root.Object("policy", PolicyFields);
        if (!ReleasePolicy.TryParseShielding(p.Text("shielding", 32), out var shielding))
        {
            throw p.Error("shielding", "must be 'shielded' or 'encryption-supported'");
        }
        var groups = new List<string>();
        foreach (var (e, path) in p.Array("hostGroups", 1, ReleasePolicy.MaxHostGroups))
        {
            var g = p.NameElement(e, path);
            if (groups.Count > 0 && string.CompareOrdinal(groups[^1], g) >= 0)
            {
                throw Error(path, "host groups must be unique and in ordinal order");
            }
            groups.Add(g);
        }
        var policy = new ReleasePolicy(shielding, groups);
        var createdAt = root.Time("createdAt");

        var owner = ReadWrap(root.Object("owner", OwnerWrapFields), WrapRecipient.Owner);
        var guardians = new List<KeyWrap>();
        foreach (var (e, path) in root.Array("guardians", 1, MaxGuardianWraps))
        {
            var wrap = ReadWrap(root.Element(e, path, GuardianWrapFields), WrapRecipient.Guardian);
            if (guardians.Any(g => g.Kid == wrap.Kid))
            {
                throw Error(path + ".kid", "a Guardian key is wrapped for twice");
            }
            guardians.Add(wrap);
        }
        var mac = root.Bytes("mac", MacLength);
        return new KeyProtector(kpId, vmId, policy, createdAt, owner, guardians, mac);
    }

    public static KeyProtector Parse(string json) => Parse(Encoding.UTF8.GetBytes(json));

    private static KeyWrap ReadWrap(StrictJson o, WrapRecipient recipient)
    {
        string? guardianId = recipient == WrapRecipient.Guardian ? o.Name("guardianId") : null;
        var kid = o.Kid("kid");
        if (o.Text("alg", 64) != EcdhEsWrap.Algorithm)
        {
            throw o.Error("alg", $"unsupported algorithm (version {CurrentVersion} uses {EcdhEsWrap.Algorithm})");
        }
        var epk = o.Bytes("epk", EcKeys.P384SpkiLength);
        if (!EcKeys.IsP384(epk))
        {
            throw o.Error("epk", "not a NIST P-384 public key (uncompressed point on the curve, DER SubjectPublicKeyInfo)");
        }
        var nonce = o.Bytes("nonce", EcdhEsWrap.NonceLength);
        var ct = o.Bytes("ct", VmMasterKey.Length);
        var tag = o.Bytes("tag", EcdhEsWrap.TagLength);
        return new KeyWrap(recipient, guardianId, kid, epk, nonce, ct, tag);
    }

    private static void WriteWrap(Utf8JsonWriter w, KeyWrap k)
    {
        w.WriteStartObject();
        if (k.GuardianId is { } id)
        {
            w.WriteString("guardianId", id);
        }
        w.WriteString("kid", k.Kid);
        w.WriteString("alg", k.Algorithm);
        w.WriteString("epk", Base64Url.EncodeToString(k.EphemeralPublicKey));
        w.WriteString("nonce", Base64Url.EncodeToString(k.Nonce));
        w.WriteString("ct", Base64Url.EncodeToString(k.Ciphertext));
        w.WriteString("tag", Base64Url.EncodeToString(k.Tag));
        w.WriteEndObject();
    }
}

using System.Text.Json.Serialization;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;

namespace Rempart.Attestation.Protocol;

/// <summary>POST /v1/releases: a host asks for a VM's master key with the VM's key protector and its health token.</summary>
public sealed record ReleaseRequest(
    [property: JsonPropertyName("keyProtector")] string KeyProtector,
    [property: JsonPropertyName("token")] string Token);

/// <summary>
/// A release: the VM master key wrapped to the binding key named in the health token (see
/// <see cref="ReleaseWrap"/>), bound to this release's id. Nothing in it is usable without that
/// host's TPM in the attested boot state.
/// </summary>
public sealed record ReleaseResponse(
    [property: JsonPropertyName("releaseId")] string ReleaseId,
    [property: JsonPropertyName("vmId")] string VmId,
    [property: JsonPropertyName("kpId")] string KpId,
    [property: JsonPropertyName("hostId")] string HostId,
    [property: JsonPropertyName("shielding")] string Shielding,
    [property: JsonPropertyName("bindingKey")] string BindingKey,
    [property: JsonPropertyName("scheme")] string Scheme,
    [property: JsonPropertyName("wrappedKey")] string WrappedKey,
    [property: JsonPropertyName("auditSeq")] long AuditSeq);

/// <summary>
/// How a released key travels (docs/key-release.md): RSAES-OAEP with the binding key's nameAlg
/// (SHA-256) and MGF1, label <c>"rempart/release/v1/" + releaseId</c> plus the terminating zero
/// TPM2_RSA_Decrypt requires (Part 3 §14.3), encrypting the 32-byte key to the binding key's
/// public modulus. Only TPM2_RSA_Decrypt on that key — a fixedTPM, fixedParent key whose only
/// authorisation is PolicyPCR over the attested PCRs — recovers it, and only with the same
/// release id: an answer cannot be replayed as another release.
/// </summary>
public static class ReleaseWrap
{
    public const string Scheme = "rsa-oaep-sha256/tpm2-rsa-decrypt/v1";

    public const string LabelPrefix = "rempart/release/v1/";

    /// <summary>The label string (without the terminating zero, which the encoders add).</summary>
    public static string Label(string releaseId)
    {
        if (releaseId.Length is 0 or > 40 || !releaseId.All(char.IsAsciiLetterOrDigit))
        {
            // The label, with its prefix and zero, must fit a TPM2B_DATA (64 bytes for SHA-512 TPMs).
            throw new ArgumentException("a release id is 1-40 ASCII letters or digits", nameof(releaseId));
        }
        return LabelPrefix + releaseId;
    }

    /// <summary>
    /// Checks that a binding key can receive a release: RSA, at least 2048 bits, SHA-256 name,
    /// no scheme other than OAEP-SHA256. Returns null when it can, else what is wrong.
    /// </summary>
    public static string? Unsupported(TpmtPublic bindingKey)
    {
        if (bindingKey.Type != TpmAlgId.Rsa || bindingKey.Parameters is not TpmsRsaParms rsa)
        {
            return $"the binding key is {bindingKey.Type}, releases need an RSA binding key";
        }
        if (rsa.KeyBits < 2048)
        {
            return $"the binding key has {rsa.KeyBits} bits, releases need at least 2048";
        }
        if (bindingKey.NameAlg != TpmAlgId.Sha256)
        {
            return "the binding key's nameAlg must be SHA-256";
        }
        if (!bindingKey.Has(TpmaObject.Decrypt) || bindingKey.Has(TpmaObject.Restricted))
        {
            return "the binding key must be an unrestricted decryption key";
        }
        if (rsa.Scheme.Scheme != TpmAlgId.Null && !(rsa.Scheme.Scheme == TpmAlgId.Oaep && rsa.Scheme.HashAlg == TpmAlgId.Sha256))
        {
            return $"the binding key's scheme is {rsa.Scheme.Scheme}, releases need OAEP-SHA256 (or none)";
        }
        return null;
    }

    /// <summary>Encrypts <paramref name="key"/> (the VM master key) to the binding key for one release.</summary>
    public static byte[] Seal(TpmtPublic bindingKey, ReadOnlySpan<byte> key, string releaseId)
    {
        if (Unsupported(bindingKey) is { } why)
        {
            throw new ArgumentException(why, nameof(bindingKey));
        }
        return SecretSharing.RsaOaepEncrypt(bindingKey, key, Label(releaseId));
    }

    /// <summary>The TPM2_RSA_Decrypt scheme and label for one release.</summary>
    public static (TpmtScheme Scheme, byte[] Label) DecryptParameters(string releaseId) =>
        (new TpmtScheme(TpmAlgId.Oaep, TpmAlgId.Sha256), [.. System.Text.Encoding.ASCII.GetBytes(Label(releaseId)), 0]);
}

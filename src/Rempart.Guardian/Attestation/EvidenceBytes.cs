using System.Text.Json.Serialization;
using Rempart.Attestation.Protocol;

namespace Rempart.Guardian.Attestation;

/// <summary>
/// <see cref="AttestationEvidence"/> as the attestation endpoint reads it: the same JSON members,
/// the binary ones decoded from base64 by the JSON reader, straight from the UTF-8 body — not
/// first transcoded into strings (UTF-16, twice the size of the 32 kB of a typical log's base64)
/// and then decoded. Nothing here is trusted more than the strings were: it is the same untrusted
/// input, checked by the same steps.
/// </summary>
public sealed record EvidenceBytes(
    [property: JsonPropertyName("hostId")] string HostId,
    [property: JsonPropertyName("nonce")] string Nonce,
    [property: JsonPropertyName("quote")] byte[] Quote,
    [property: JsonPropertyName("quoteSignature")] byte[] QuoteSignature,
    [property: JsonPropertyName("pcrs")] Dictionary<string, Dictionary<string, string>> Pcrs,
    [property: JsonPropertyName("eventLog")] byte[] EventLog,
    [property: JsonPropertyName("bindingKeyPublic")] byte[] BindingKeyPublic,
    [property: JsonPropertyName("bindingKeyCertify")] byte[] BindingKeyCertify,
    [property: JsonPropertyName("bindingKeyCertifySignature")] byte[] BindingKeyCertifySignature)
{
    /// <summary>False when a member was missing (JSON does not enforce the non-null annotations).</summary>
    public bool Complete =>
        HostId is not null && Nonce is not null && Quote is not null && QuoteSignature is not null && Pcrs is not null
        && EventLog is not null && BindingKeyPublic is not null && BindingKeyCertify is not null && BindingKeyCertifySignature is not null;

    /// <summary>The wire strings decoded; null when a binary member is not base64.</summary>
    public static EvidenceBytes? Decode(AttestationEvidence e)
    {
        try
        {
            return new EvidenceBytes(e.HostId, e.Nonce, Convert.FromBase64String(e.Quote), Convert.FromBase64String(e.QuoteSignature), e.Pcrs,
                Convert.FromBase64String(e.EventLog), Convert.FromBase64String(e.BindingKeyPublic), Convert.FromBase64String(e.BindingKeyCertify),
                Convert.FromBase64String(e.BindingKeyCertifySignature));
        }
        catch (FormatException)
        {
            return null;
        }
    }
}

using System.Text.Json.Serialization;

namespace Rempart.Attestation.Protocol;

// The Guardian's host-facing wire format (JSON over HTTPS). Binary TPM structures travel as
// base64 of their exact TPM encoding; nothing in a request is trusted until verified.
// docs/guardian-api.md describes every field.

/// <summary>POST /v1/enrolments: a host presents its EK and AK.</summary>
public sealed record EnrolmentRequest(
    [property: JsonPropertyName("hostname")] string Hostname,
    [property: JsonPropertyName("ekPublic")] string EkPublic,
    [property: JsonPropertyName("ekCertificate")] string? EkCertificate,
    [property: JsonPropertyName("akPublic")] string AkPublic);

/// <summary>
/// The Guardian's challenge: a credential made with MakeCredential for the AK's Name, encrypted
/// to the EK. Only the TPM holding both can answer.
/// </summary>
public sealed record EnrolmentChallenge(
    [property: JsonPropertyName("enrolmentId")] string EnrolmentId,
    [property: JsonPropertyName("credentialBlob")] string CredentialBlob,
    [property: JsonPropertyName("encryptedSecret")] string EncryptedSecret,
    [property: JsonPropertyName("expiresAt")] DateTimeOffset ExpiresAt);

/// <summary>POST /v1/enrolments/{id}/activate: the secret ActivateCredential recovered.</summary>
public sealed record EnrolmentActivation(
    [property: JsonPropertyName("secret")] string Secret);

/// <summary>The result of enrolment: the host's id and state (pending until an admin or a group rule approves it).</summary>
public sealed record EnrolmentResult(
    [property: JsonPropertyName("hostId")] string HostId,
    [property: JsonPropertyName("state")] string State,
    [property: JsonPropertyName("group")] string? Group);

/// <summary>POST /v1/attestations/nonce: a single-use nonce for one host.</summary>
public sealed record NonceRequest(
    [property: JsonPropertyName("hostId")] string HostId);

public sealed record NonceResponse(
    [property: JsonPropertyName("nonce")] string Nonce,
    [property: JsonPropertyName("expiresAt")] DateTimeOffset ExpiresAt);

/// <summary>
/// POST /v1/attestations: the evidence. <see cref="Nonce"/> echoes the Guardian's nonce exactly
/// (lowercase hex); <see cref="Pcrs"/> is bank → index → hex, the values the host read
/// (untrusted: they must hash to the quoted digest).
/// </summary>
public sealed record AttestationEvidence(
    [property: JsonPropertyName("hostId")] string HostId,
    [property: JsonPropertyName("nonce")] string Nonce,
    [property: JsonPropertyName("quote")] string Quote,
    [property: JsonPropertyName("quoteSignature")] string QuoteSignature,
    [property: JsonPropertyName("pcrs")] Dictionary<string, Dictionary<string, string>> Pcrs,
    [property: JsonPropertyName("eventLog")] string EventLog,
    [property: JsonPropertyName("bindingKeyPublic")] string BindingKeyPublic,
    [property: JsonPropertyName("bindingKeyCertify")] string BindingKeyCertify,
    [property: JsonPropertyName("bindingKeyCertifySignature")] string BindingKeyCertifySignature);

/// <summary>One failed check: a stable identifier, what was found, what was expected.</summary>
public sealed record AttestationFailure(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("message")] string Message);

/// <summary>The verdict; <see cref="Token"/> is the health token (a JWT) when the host is affirmed.</summary>
public sealed record AttestationResult(
    [property: JsonPropertyName("hostId")] string HostId,
    [property: JsonPropertyName("status")] string Status,
    [property: JsonPropertyName("failures")] IReadOnlyList<AttestationFailure> Failures,
    [property: JsonPropertyName("token")] string? Token,
    [property: JsonPropertyName("expiresAt")] DateTimeOffset? ExpiresAt,
    [property: JsonPropertyName("rebootDetected")] bool RebootDetected);

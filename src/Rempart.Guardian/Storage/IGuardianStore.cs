namespace Rempart.Guardian.Storage;

/// <summary>Host lifecycle states (DESIGN.md §3; issue: pending until approved, stale or failed revoke tokens).</summary>
public static class HostStates
{
    public const string Pending = "pending";
    public const string Approved = "approved";
    public const string Healthy = "healthy";
    public const string Stale = "stale";
    public const string Failed = "failed";
    public const string Removed = "removed";
}

/// <summary>An enrolled host. Its AK is trusted because enrolment bound it to the EK, never because evidence carried it.</summary>
public sealed record HostRecord(
    string Id,
    string Hostname,
    byte[] EkPublic,
    byte[]? EkCertificate,
    byte[] AkPublic,
    string AkName,
    string State,
    string? Group,
    DateTimeOffset EnrolledAt,
    DateTimeOffset? LastAttestedAt,
    uint? LastResetCount,
    uint? LastRestartCount,
    ulong? LastClock,
    string? LastStatus);

/// <summary>
/// A pending MakeCredential challenge. Only the SHA-256 of the secret is stored: a database dump
/// cannot answer a challenge.
/// </summary>
public sealed record EnrolmentChallengeRecord(
    string Id,
    string Hostname,
    byte[] EkPublic,
    byte[]? EkCertificate,
    byte[] AkPublic,
    byte[] SecretHash,
    DateTimeOffset ExpiresAt);

public sealed record NonceRecord(string Nonce, string HostId, DateTimeOffset ExpiresAt);

/// <summary>A host group: hosts in it are judged by its policy; an approval rule may admit hosts automatically.</summary>
public sealed record HostGroupRecord(string Name, string Description, string? ApproveEkIssuer, string? PolicyId, DateTimeOffset CreatedAt);

/// <summary>A health token the Guardian issued (the token itself is not stored, only its id).</summary>
public sealed record IssuedTokenRecord(string Jti, string HostId, DateTimeOffset IssuedAt, DateTimeOffset ExpiresAt, DateTimeOffset? RevokedAt);

/// <summary>An API credential: only the SHA-256 of the bearer token is stored.</summary>
public sealed record ApiTokenRecord(string Id, string Name, string Role, byte[] TokenHash, DateTimeOffset CreatedAt);

/// <summary>
/// An admin's explicit allow of a TPM that has no EK certificate: the EK public area itself
/// (its TPM Name is the key), so enrolment can still prove the AK lives with this EK.
/// </summary>
public sealed record EkAllowRecord(string EkName, byte[] EkPublic, string Comment, DateTimeOffset AllowedAt);

/// <summary>
/// The last verified evidence of a host (for baselines and "what would fail?"), with the quote,
/// its signature and nonce so that it can be verified again (null in rows from before schema 3).
/// </summary>
public sealed record EvidenceRecord(string HostId, DateTimeOffset At, byte[] EventLog, string PcrsJson, string Status,
    byte[]? Quote = null, byte[]? QuoteSignature = null, byte[]? Nonce = null);

/// <summary>
/// One hash-chained audit record: Hash = SHA-256(PrevHash ‖ canonical(Seq, At, Kind, Subject, Data)).
/// </summary>
public sealed record AuditRecord(long Seq, DateTimeOffset At, string Kind, string Subject, string DataJson, byte[] PrevHash, byte[] Hash);

/// <summary>
/// The start of an attestation, read in one step: the host as it is now (null when unknown),
/// whether this call consumed the nonce, and what judges the host — its group's policy id (null
/// when the host has no group, the group does not exist or names no policy) and that policy's
/// latest version (null when the group names a policy that does not exist).
/// </summary>
public sealed record AttestationStart(HostRecord? Host, bool NonceConsumed, string? PolicyId = null, int? PolicyVersion = null);

/// <summary>A version of an attestation policy (the document as the operator wrote it, YAML or JSON).</summary>
public sealed record PolicyRecord(string Id, int Version, string Mode, string Document, DateTimeOffset CreatedAt);

/// <summary>
/// The Guardian's storage: one small interface, two backends (SQLite embedded, PostgreSQL for
/// replicas), one schema with migrations. Every method is atomic on its own.
/// </summary>
public interface IGuardianStore : IAsyncDisposable
{
    /// <summary>Creates or upgrades the schema (idempotent).</summary>
    Task MigrateAsync(CancellationToken ct = default);

    Task<int> SchemaVersionAsync(CancellationToken ct = default);

    Task InsertHostAsync(HostRecord host, CancellationToken ct = default);

    Task UpdateHostAsync(HostRecord host, CancellationToken ct = default);

    Task<HostRecord?> GetHostAsync(string id, CancellationToken ct = default);

    Task<HostRecord?> GetHostByAkNameAsync(string akName, CancellationToken ct = default);

    Task<IReadOnlyList<HostRecord>> ListHostsAsync(CancellationToken ct = default);

    Task InsertChallengeAsync(EnrolmentChallengeRecord challenge, CancellationToken ct = default);

    /// <summary>Removes and returns an unexpired challenge: it can be answered once only.</summary>
    Task<EnrolmentChallengeRecord?> TakeChallengeAsync(string id, DateTimeOffset now, CancellationToken ct = default);

    Task InsertNonceAsync(NonceRecord nonce, CancellationToken ct = default);

    /// <summary>Consumes an unexpired nonce issued to that host; true exactly once per nonce, even under concurrency.</summary>
    Task<bool> ConsumeNonceAsync(string hostId, string nonce, DateTimeOffset now, CancellationToken ct = default);

    /// <summary>
    /// Stores a nonce for its host only if that host exists and is not removed, in one statement;
    /// false (nothing stored) otherwise.
    /// </summary>
    Task<bool> InsertNonceForHostAsync(NonceRecord nonce, CancellationToken ct = default);

    /// <summary>
    /// The start of an attestation, atomically: the host as it is now, its group's policy reference,
    /// and whether this call consumed the nonce — which it does only when the host exists and is
    /// neither pending nor removed, and the nonce is unexpired and was issued to it; true exactly
    /// once per nonce, even under concurrency.
    /// </summary>
    Task<AttestationStart> TakeNonceForAttestationAsync(string hostId, string nonce, DateTimeOffset now, CancellationToken ct = default);

    /// <summary>Deletes nonces and challenges that expired before <paramref name="now"/>.</summary>
    Task<int> PurgeExpiredAsync(DateTimeOffset now, CancellationToken ct = default);

    Task UpsertGroupAsync(HostGroupRecord group, CancellationToken ct = default);

    Task<HostGroupRecord?> GetGroupAsync(string name, CancellationToken ct = default);

    Task<IReadOnlyList<HostGroupRecord>> ListGroupsAsync(CancellationToken ct = default);

    Task<bool> DeleteGroupAsync(string name, CancellationToken ct = default);

    Task InsertTokenAsync(IssuedTokenRecord token, CancellationToken ct = default);

    Task<IssuedTokenRecord?> GetTokenAsync(string jti, CancellationToken ct = default);

    /// <summary>Revokes every unrevoked token of a host; returns how many.</summary>
    Task<int> RevokeHostTokensAsync(string hostId, DateTimeOffset now, CancellationToken ct = default);

    Task InsertApiTokenAsync(ApiTokenRecord token, CancellationToken ct = default);

    Task<ApiTokenRecord?> FindApiTokenAsync(byte[] tokenHash, CancellationToken ct = default);

    Task<IReadOnlyList<ApiTokenRecord>> ListApiTokensAsync(CancellationToken ct = default);

    /// <summary>Deletes an API token by id; false when there was none.</summary>
    Task<bool> DeleteApiTokenAsync(string id, CancellationToken ct = default);

    /// <summary>Allows (or re-allows, replacing the comment) an EK without certificate.</summary>
    Task UpsertEkAllowAsync(EkAllowRecord allow, CancellationToken ct = default);

    Task<EkAllowRecord?> GetEkAllowAsync(string ekName, CancellationToken ct = default);

    Task<IReadOnlyList<EkAllowRecord>> ListEkAllowsAsync(CancellationToken ct = default);

    Task<bool> DeleteEkAllowAsync(string ekName, CancellationToken ct = default);

    Task SaveEvidenceAsync(EvidenceRecord evidence, CancellationToken ct = default);

    /// <summary>
    /// What an affirmed attestation changes, all or nothing: the host's new state and last-attestation
    /// fields (<see cref="HostRecord.State"/>, <c>LastAttestedAt</c>, <c>LastResetCount</c>,
    /// <c>LastRestartCount</c>, <c>LastClock</c>, <c>LastStatus</c>; the host must exist, its other
    /// fields are left as stored), the health token issued, and the host's evidence (as
    /// <see cref="SaveEvidenceAsync"/>).
    /// </summary>
    Task RecordAttestationAsync(HostRecord host, IssuedTokenRecord token, EvidenceRecord evidence, CancellationToken ct = default);

    /// <summary>
    /// <see cref="RecordAttestationAsync(HostRecord, IssuedTokenRecord, EvidenceRecord, CancellationToken)"/>
    /// and the audit records of that attestation (appended as <see cref="AppendAuditAsync"/> does, in
    /// order), all in one transaction: when the task completes, all of it is durable; when it fails,
    /// none of it is stored. A backend may commit several callers' attestations together.
    /// </summary>
    /// <returns>The audit records appended, in the order of <paramref name="audit"/>.</returns>
    Task<IReadOnlyList<AuditRecord>> RecordAttestationAsync(HostRecord host, IssuedTokenRecord token, EvidenceRecord evidence,
        IReadOnlyList<AuditEntry> audit, CancellationToken ct = default);

    Task<EvidenceRecord?> GetLatestEvidenceAsync(string hostId, CancellationToken ct = default);

    /// <summary>Appends an audit record, chaining its hash to the previous one, serialised across concurrent writers and replicas.</summary>
    Task<AuditRecord> AppendAuditAsync(string kind, string subject, string dataJson, DateTimeOffset at, CancellationToken ct = default);

    Task<IReadOnlyList<AuditRecord>> ReadAuditAsync(long fromSeq, int max, CancellationToken ct = default);

    /// <summary>Stores a new policy version (versions are never overwritten).</summary>
    Task InsertPolicyAsync(PolicyRecord policy, CancellationToken ct = default);

    /// <summary>The given version of a policy, or its latest when <paramref name="version"/> is null.</summary>
    Task<PolicyRecord?> GetPolicyAsync(string id, int? version = null, CancellationToken ct = default);

    /// <summary>The latest version of every policy.</summary>
    Task<IReadOnlyList<PolicyRecord>> ListPoliciesAsync(CancellationToken ct = default);
}

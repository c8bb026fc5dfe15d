using System.Text.Json.Serialization;

namespace Rempart.Attestation.Protocol;

// Live migration between two attested hosts (docs/migration.md). The source host asks the
// Guardian to authorise a migration of a VM to a destination host, presenting both hosts' health
// tokens; the Guardian checks both hosts are healthy now and both groups are allowed by the VM's
// key protector, records a short-lived, single-use migration, and releases the VM master key to
// the source (wrapped to its binding key). The destination then accepts the migration with its
// own token and gets its own release. The Guardian never sees the channel key: each host wraps a
// random share to the other's binding key, which only that TPM, in the attested state, can open.

/// <summary>POST /v1/migrations, by the source host.</summary>
public sealed record MigrationAuthoriseRequest(
    [property: JsonPropertyName("keyProtector")] string KeyProtector,
    [property: JsonPropertyName("sourceToken")] string SourceToken,
    [property: JsonPropertyName("destinationToken")] string DestinationToken);

/// <summary>One end of a migration as the Guardian attested it: host, group, binding key Name (hex) and public area (base64url TPM2B_PUBLIC, as in the token's <c>rempart.binding-public</c>).</summary>
public sealed record MigrationPeer(
    [property: JsonPropertyName("hostId")] string HostId,
    [property: JsonPropertyName("group")] string Group,
    [property: JsonPropertyName("bindingKey")] string BindingKey,
    [property: JsonPropertyName("bindingPublic")] string BindingPublic);

/// <summary>The answer to the source: the migration's id and lifetime, both ends, and the source's own release of the VM key.</summary>
public sealed record MigrationAuthorisation(
    [property: JsonPropertyName("migrationId")] string MigrationId,
    [property: JsonPropertyName("vmId")] string VmId,
    [property: JsonPropertyName("kpId")] string KpId,
    [property: JsonPropertyName("expiresAt")] DateTimeOffset ExpiresAt,
    [property: JsonPropertyName("source")] MigrationPeer Source,
    [property: JsonPropertyName("destination")] MigrationPeer Destination,
    [property: JsonPropertyName("sourceRelease")] ReleaseResponse SourceRelease);

/// <summary>POST /v1/migrations/{id}/check, by the destination host with its token: is this a live migration to me? (Before it opens a peer's share in its TPM.)</summary>
public sealed record MigrationCheckRequest(
    [property: JsonPropertyName("token")] string Token);

/// <summary>The answer to a check: the migration's VM, lifetime and both ends. Releases nothing.</summary>
public sealed record MigrationCheck(
    [property: JsonPropertyName("migrationId")] string MigrationId,
    [property: JsonPropertyName("vmId")] string VmId,
    [property: JsonPropertyName("expiresAt")] DateTimeOffset ExpiresAt,
    [property: JsonPropertyName("source")] MigrationPeer Source,
    [property: JsonPropertyName("destination")] MigrationPeer Destination);

/// <summary>POST /v1/migrations/{id}/accept, by the destination host, with the same key protector and its own token.</summary>
public sealed record MigrationAcceptRequest(
    [property: JsonPropertyName("keyProtector")] string KeyProtector,
    [property: JsonPropertyName("token")] string Token);

/// <summary>The answer to the destination: both ends and its release of the VM key (wrapped to its binding key).</summary>
public sealed record MigrationAcceptance(
    [property: JsonPropertyName("migrationId")] string MigrationId,
    [property: JsonPropertyName("vmId")] string VmId,
    [property: JsonPropertyName("kpId")] string KpId,
    [property: JsonPropertyName("expiresAt")] DateTimeOffset ExpiresAt,
    [property: JsonPropertyName("source")] MigrationPeer Source,
    [property: JsonPropertyName("destination")] MigrationPeer Destination,
    [property: JsonPropertyName("release")] ReleaseResponse Release);

/// <summary>POST /v1/migrations/{id}/complete, by the source host: how it ended (<c>completed</c>, <c>failed</c> or <c>unknown</c>).</summary>
public sealed record MigrationCompleteRequest(
    [property: JsonPropertyName("token")] string Token,
    [property: JsonPropertyName("outcome")] string Outcome,
    [property: JsonPropertyName("reason")] string? Reason);

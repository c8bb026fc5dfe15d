using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Rempart.Attestation.Protocol;
using Rempart.Guardian.Keys;
using Rempart.Guardian.Storage;
using Rempart.KeyProtection;

namespace Rempart.Guardian.Release;

/// <summary>The answer to POST /v1/migrations/{id}/complete: how the migration ended and where the audit log says so.</summary>
public sealed record MigrationCompletion(
    [property: JsonPropertyName("migrationId")] string MigrationId,
    [property: JsonPropertyName("outcome")] string Outcome,
    [property: JsonPropertyName("auditSeq")] long AuditSeq);

/// <summary>
/// Live migration between two attested hosts (docs/migration.md). <b>Authorise</b>: the source
/// presents the VM's key protector and both hosts' health tokens; each token and its host pass
/// exactly the checks of a key release (ReleaseService, ids <c>migration.source.*</c> and
/// <c>migration.destination.*</c>), the hosts differ, the key protector opens with this
/// Guardian's key and allows both groups; the source gets its release (wrapped to its binding
/// key) and the migration is recorded. <b>Accept</b>: the destination, with its token (same host,
/// same binding key, still healthy and allowed) and the very same key protector string, gets its
/// release once — single use. <b>Complete</b>: the source reports how it ended; its token may
/// have expired or been revoked by then (a host that went stale mid-copy still says what
/// happened), but it must be one this Guardian issued to that host. Every step and every refusal
/// is a hash-chained audit record; the VM key exists here only between unwrap and re-wrap.
/// <para>
/// Migrations are kept in memory only, on purpose: one lives <see cref="Lifetime"/> (two minutes),
/// and a Guardian restart makes in-flight migrations fail closed — the destination can no longer
/// accept, so it never gets the key, and the source keeps running its VM. Nothing to clean up in
/// the database, no secret or state to replicate. Entries are pruned on access,
/// <see cref="Retention"/> after they expire (so a late accept is told <c>migration.expired</c>
/// and the source can still report the outcome).
/// </para>
/// </summary>
public sealed class MigrationService(ReleaseService releases, Audit audit, TimeProvider time)
{
    public const string AuthorisedKind = "vm.migration-authorised";
    public const string AcceptedKind = "vm.migration-accepted";
    public const string RefusedKind = "vm.migration-refused";

    /// <summary>The audit kind of a reported outcome: <c>vm.migration-completed</c>, <c>-failed</c> or <c>-unknown</c>.</summary>
    public static string OutcomeKind(string outcome) => "vm.migration-" + outcome;

    /// <summary>How long the destination has to accept.</summary>
    public static readonly TimeSpan Lifetime = TimeSpan.FromMinutes(2);

    /// <summary>How long an entry is kept after it expired, for a late accept (refused) and the outcome report.</summary>
    public static readonly TimeSpan Retention = TimeSpan.FromMinutes(10);

    public const int MaxReasonLength = 300;

    private const string Source = "migration.source.";
    private const string Destination = "migration.destination.";
    private const string Kp = "migration.";

    private static readonly string[] Outcomes = ["completed", "failed", "unknown"];

    private readonly ConcurrentDictionary<string, Migration> _migrations = new(StringComparer.Ordinal);

    public async Task<MigrationAuthorisation> AuthoriseAsync(MigrationAuthoriseRequest request, CancellationToken ct)
    {
        string subject = "vm:?";
        var context = new JsonObject { ["step"] = "authorise" };
        try
        {
            var kp = ReleaseService.ParseKp(request.KeyProtector, Kp);
            subject = ReleaseService.Subject(kp.VmId);
            context["vmId"] = kp.VmId;
            context["kpId"] = kp.KpId;
            var (sourceClaims, sourceHost) = await releases.CheckTokenAndHostAsync(request.SourceToken, Child(context, "source"), Source, ct);
            var (destinationClaims, destinationHost) = await releases.CheckTokenAndHostAsync(request.DestinationToken, Child(context, "destination"), Destination, ct);
            if (sourceHost.Id == destinationHost.Id)
            {
                throw new ReleaseException("migration.same-host", $"host {sourceHost.Id} is both the source and the destination", 400);
            }
            var sourceBinding = ReleaseService.BindingKey(sourceClaims, Source);
            ReleaseService.BindingKey(destinationClaims, Destination);
            using var vmk = releases.Unwrap(kp, Kp);
            if (!kp.Policy.Allows(sourceHost.Group!))
            {
                throw new ReleaseException(Source + "group.not-allowed", ReleaseService.NotAllowed(kp, sourceHost));
            }
            if (!kp.Policy.Allows(destinationHost.Group!))
            {
                throw new ReleaseException(Destination + "group.not-allowed", ReleaseService.NotAllowed(kp, destinationHost));
            }

            var now = time.GetUtcNow();
            var id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
            context["migrationId"] = id;
            var migration = new Migration(id, kp.VmId, kp.KpId, Digest(request.KeyProtector),
                Peer(sourceClaims, sourceHost), Jti(sourceClaims), Peer(destinationClaims, destinationHost), Jti(destinationClaims),
                now + Lifetime, MigrationState.Authorised);
            var release = await releases.SealAsync(kp, vmk, sourceBinding, sourceClaims, sourceHost, id, ct);
            await audit.WriteAsync(AuthorisedKind, subject, new
            {
                migrationId = id,
                vmId = kp.VmId,
                kpId = kp.KpId,
                expiresAt = migration.ExpiresAt,
                source = new { host = sourceHost.Id, group = sourceHost.Group, jti = migration.SourceJti },
                destination = new { host = destinationHost.Id, group = destinationHost.Group, jti = migration.DestinationJti },
                sourceReleaseId = release.ReleaseId,
            }, ct);
            Prune(now);
            _migrations[id] = migration;
            return new MigrationAuthorisation(id, kp.VmId, kp.KpId, migration.ExpiresAt, migration.Source, migration.Destination, release);
        }
        catch (Exception e) when (e is ReleaseException or KeyProviderException)
        {
            throw await RefuseAsync(subject, context, e, ct);
        }
    }

    /// <summary>
    /// The destination asks, with its token, whether <paramref name="id"/> is a live migration to it, before
    /// it spends a TPM operation on a share a peer sent (docs/migration.md, "Key agreement"): every check
    /// of accept that needs no key protector. Releases nothing; answers once per migration (then
    /// <c>migration.used</c>); a refusal is audited.
    /// </summary>
    public async Task<MigrationCheck> CheckAsync(string id, MigrationCheckRequest request, CancellationToken ct)
    {
        var context = new JsonObject { ["step"] = "check", ["migrationId"] = id };
        try
        {
            var (m, _, _) = await DestinationAsync(id, request.Token, context, ct, check: true);
            // Once: one migration is one connection, so a second check is someone replaying the challenge to make the TPM work.
            if (!_migrations.TryUpdate(id, m with { State = MigrationState.Checked }, m))
            {
                throw Used(id);
            }
            return new MigrationCheck(id, m.VmId, m.ExpiresAt, m.Source, m.Destination);
        }
        catch (ReleaseException e)
        {
            throw await RefuseAsync(SubjectOf(context), context, e, ct);
        }
    }

    public async Task<MigrationAcceptance> AcceptAsync(string id, MigrationAcceptRequest request, CancellationToken ct)
    {
        var context = new JsonObject { ["step"] = "accept", ["migrationId"] = id };
        try
        {
            var (m, claims, host) = await DestinationAsync(id, request.Token, context, ct);
            var subject = ReleaseService.Subject(m.VmId);
            var binding = ReleaseService.BindingKey(claims, Destination);
            if (!CryptographicOperations.FixedTimeEquals(Digest(request.KeyProtector), m.KpDigest))
            {
                throw new ReleaseException("migration.kp.changed", "this is not the key protector the migration was authorised for", 400);
            }
            var kp = ReleaseService.ParseKp(request.KeyProtector, Kp);
            using var vmk = releases.Unwrap(kp, Kp);
            if (!kp.Policy.Allows(host.Group!))
            {
                throw new ReleaseException(Destination + "group.not-allowed", ReleaseService.NotAllowed(kp, host));
            }
            // Single use: only one accept wins, before any key leaves.
            if (!_migrations.TryUpdate(id, m with { State = MigrationState.Accepted }, m))
            {
                throw Used(id);
            }
            var release = await releases.SealAsync(kp, vmk, binding, claims, host, id, ct);
            await audit.WriteAsync(AcceptedKind, subject, new
            {
                migrationId = id,
                vmId = m.VmId,
                kpId = m.KpId,
                destination = new { host = host.Id, group = host.Group, jti = Jti(claims) },
                releaseId = release.ReleaseId,
            }, ct);
            return new MigrationAcceptance(id, m.VmId, m.KpId, m.ExpiresAt, m.Source, m.Destination, release);
        }
        catch (Exception e) when (e is ReleaseException or KeyProviderException)
        {
            throw await RefuseAsync(SubjectOf(context), context, e, ct);
        }
    }

    public async Task<MigrationCompletion> CompleteAsync(string id, MigrationCompleteRequest request, CancellationToken ct)
    {
        string subject = "vm:?";
        var context = new JsonObject { ["step"] = "complete", ["migrationId"] = id };
        try
        {
            var m = Find(id, time.GetUtcNow());
            subject = ReleaseService.Subject(m.VmId);
            context["vmId"] = m.VmId;
            context["kpId"] = m.KpId;
            var hostId = await CheckIssuedTokenAsync(request.Token, Child(context, "source"), ct);
            if (hostId != m.Source.HostId)
            {
                throw new ReleaseException("migration.wrong-host", $"migration {id} is reported by its source {m.Source.HostId}, not {hostId}");
            }
            var outcome = request.Outcome ?? "";
            if (!Outcomes.Contains(outcome, StringComparer.Ordinal))
            {
                throw new ReleaseException("migration.outcome", $"outcome is one of {string.Join(", ", Outcomes)}", 400);
            }
            var reason = request.Reason ?? "";
            if (reason.Length > MaxReasonLength || !Printable(reason))
            {
                throw new ReleaseException("migration.reason", $"reason is at most {MaxReasonLength} printable characters", 400);
            }
            Migration before;
            do
            {
                before = Find(id, time.GetUtcNow());
                if (before.State == MigrationState.Completed)
                {
                    throw new ReleaseException("migration.completed-already", $"migration {id} was already reported", 409);
                }
            }
            while (!_migrations.TryUpdate(id, before with { State = MigrationState.Completed }, before));
            var record = await audit.WriteAsync(OutcomeKind(outcome), subject, new
            {
                migrationId = id,
                vmId = m.VmId,
                kpId = m.KpId,
                outcome,
                source = m.Source.HostId,
                destination = m.Destination.HostId,
                accepted = before.State == MigrationState.Accepted,
                reason,
            }, ct);
            return new MigrationCompletion(id, outcome, record.Seq);
        }
        catch (Exception e) when (e is ReleaseException or KeyProviderException)
        {
            throw await RefuseAsync(subject, context, e, ct);
        }
    }

    /// <summary>
    /// The source's token when it reports an outcome: this Guardian's signature and a jti it
    /// recorded for that host — but neither lifetime nor revocation (the report is what a stale or
    /// failed source can still say). Checking it "at the epoch" checks everything but the lifetime.
    /// </summary>
    private async Task<string> CheckIssuedTokenAsync(string token, JsonObject context, CancellationToken ct) =>
        (await releases.CheckIssuedAsync(token, DateTimeOffset.UnixEpoch, context, Source, ct)).Issued.HostId;

    /// <summary>Accept's and check's common part: a live, not yet accepted migration, and a token of its recorded destination with the recorded binding key.</summary>
    private async Task<(Migration M, JsonObject Claims, HostRecord Host)> DestinationAsync(string id, string token, JsonObject context, CancellationToken ct, bool check = false)
    {
        var now = time.GetUtcNow();
        var m = Find(id, now);
        context["vmId"] = m.VmId;
        context["kpId"] = m.KpId;
        if (now >= m.ExpiresAt)
        {
            throw new ReleaseException("migration.expired", $"migration {id} expired at {m.ExpiresAt:u}: authorise it again", 410);
        }
        if (m.State is not MigrationState.Authorised && (check || m.State is not MigrationState.Checked))
        {
            throw Used(id);
        }
        var (claims, host) = await releases.CheckTokenAndHostAsync(token, Child(context, "destination"), Destination, ct);
        if (host.Id != m.Destination.HostId)
        {
            throw new ReleaseException("migration.wrong-host", $"migration {id} goes to host {m.Destination.HostId}, not {host.Id}");
        }
        if (!string.Equals(claims["rempart.binding-key"]?.GetValue<string>(), m.Destination.BindingKey, StringComparison.Ordinal))
        {
            throw new ReleaseException("migration.binding-key.changed",
                $"host {host.Id} was authorised with binding key {m.Destination.BindingKey}; accept with the token that names it");
        }
        return (m, claims, host);
    }

    /// <summary>The audit subject of a refusal: the VM once the migration was found, <c>vm:?</c> before.</summary>
    private static string SubjectOf(JsonObject context) =>
        context["vmId"] is JsonValue v && v.TryGetValue<string>(out var vmId) ? ReleaseService.Subject(vmId) : "vm:?";

    private Migration Find(string id, DateTimeOffset now)
    {
        Prune(now);
        return _migrations.TryGetValue(id ?? "", out var m)
            ? m
            : throw new ReleaseException("migration.unknown", $"no migration {id} (unknown, long expired, or the Guardian restarted)", 404);
    }

    private void Prune(DateTimeOffset now)
    {
        foreach (var (id, m) in _migrations)
        {
            if (now >= m.ExpiresAt + Retention)
            {
                _migrations.TryRemove(id, out _);
            }
        }
    }

    private async Task<ReleaseException> RefuseAsync(string subject, JsonObject context, Exception e, CancellationToken ct)
    {
        // A key provider failure (HSM unreachable, …) fails closed like a refusal, and says so in the audit log.
        var refusal = e as ReleaseException
            ?? new ReleaseException("migration.keys.unavailable", "the Guardian's key provider could not unwrap the key: " + e.Message, 503);
        context["reason"] = e is KeyProviderException k ? "migration.keys." + k.Id : refusal.Id;
        await audit.WriteAsync(RefusedKind, subject, context, ct);
        return refusal;
    }

    private static ReleaseException Used(string id) =>
        new("migration.used", $"migration {id} was already checked, accepted or reported: a migration is checked once and accepted once", 409);

    private static JsonObject Child(JsonObject parent, string name)
    {
        var child = new JsonObject();
        parent[name] = child;
        return child;
    }

    private static MigrationPeer Peer(JsonObject claims, HostRecord host) =>
        new(host.Id, host.Group!, claims["rempart.binding-key"]!.GetValue<string>(), claims["rempart.binding-public"]!.GetValue<string>());

    private static string Jti(JsonObject claims) => claims["jti"]?.GetValue<string>() ?? "";

    private static byte[] Digest(string? keyProtector) => SHA256.HashData(Encoding.UTF8.GetBytes(keyProtector ?? ""));

    /// <summary>Well-formed UTF-16 with no control, format (bidi overrides …), line or paragraph separator, private-use or unassigned characters.</summary>
    private static bool Printable(string text)
    {
        for (var rest = text.AsSpan(); !rest.IsEmpty;)
        {
            if (Rune.DecodeFromUtf16(rest, out var c, out int used) != OperationStatus.Done
                || Rune.GetUnicodeCategory(c) is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.LineSeparator
                    or UnicodeCategory.ParagraphSeparator or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned)
            {
                return false;
            }
            rest = rest[used..];
        }
        return true;
    }

    private enum MigrationState
    {
        Authorised,
        Checked,
        Accepted,
        Completed,
    }

    /// <summary>One migration as authorised: both ends, the digest of the exact key protector string, when it expires, how far it got.</summary>
    private sealed record Migration(string Id, string VmId, string KpId, byte[] KpDigest, MigrationPeer Source, string SourceJti,
        MigrationPeer Destination, string DestinationJti, DateTimeOffset ExpiresAt, MigrationState State);
}

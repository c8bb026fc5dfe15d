using System.Data.Common;

namespace Rempart.Guardian.Storage;

/// <summary>
/// What SQLite and PostgreSQL share: every operation that is one statement of the common SQL
/// (<see cref="StoreSql"/>). A backend supplies how a statement runs (connections, locks) and
/// the operations whose atomicity it provides its own way (migration, challenge take, audit).
/// </summary>
public abstract class SqlGuardianStore : IGuardianStore
{
    public abstract Task MigrateAsync(CancellationToken ct = default);

    public abstract Task<int> SchemaVersionAsync(CancellationToken ct = default);

    public abstract Task<EnrolmentChallengeRecord?> TakeChallengeAsync(string id, DateTimeOffset now, CancellationToken ct = default);

    public abstract Task<AuditRecord> AppendAuditAsync(string kind, string subject, string dataJson, DateTimeOffset at, CancellationToken ct = default);

    public abstract ValueTask DisposeAsync();

    protected abstract Task<int> ExecuteAsync(string sql, Action<DbCommand> bind, CancellationToken ct);

    protected abstract Task<T?> QuerySingleAsync<T>(string sql, Action<DbCommand> bind, Func<DbDataReader, T> read, CancellationToken ct)
        where T : class;

    protected abstract Task<IReadOnlyList<T>> QueryAsync<T>(string sql, Action<DbCommand> bind, Func<DbDataReader, T> read, CancellationToken ct);

    /// <summary>
    /// Runs statements in order as one transaction (all or nothing); returns each one's affected
    /// row count. A backend sends them in one round trip where it can.
    /// </summary>
    protected abstract Task<IReadOnlyList<int>> ExecuteAtomicallyAsync(IReadOnlyList<(string Sql, Action<DbCommand> Bind)> statements, CancellationToken ct);

    public Task InsertHostAsync(HostRecord host, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.InsertHost, cmd => StoreSql.BindHost(cmd, host), ct);

    public async Task UpdateHostAsync(HostRecord host, CancellationToken ct = default)
    {
        if (await ExecuteAsync(StoreSql.UpdateHost, cmd => StoreSql.BindHost(cmd, host), ct) == 0)
        {
            throw new KeyNotFoundException($"host '{host.Id}' does not exist");
        }
    }

    public Task<HostRecord?> GetHostAsync(string id, CancellationToken ct = default) =>
        QuerySingleAsync(StoreSql.SelectHost + " WHERE id = @id", cmd => StoreSql.Bind(cmd, "@id", id), StoreSql.ReadHost, ct);

    public Task<HostRecord?> GetHostByAkNameAsync(string akName, CancellationToken ct = default) =>
        QuerySingleAsync(StoreSql.SelectHost + " WHERE ak_name = @ak", cmd => StoreSql.Bind(cmd, "@ak", akName), StoreSql.ReadHost, ct);

    public Task<IReadOnlyList<HostRecord>> ListHostsAsync(CancellationToken ct = default) =>
        QueryAsync(StoreSql.SelectHost + " ORDER BY enrolled_at, id", _ => { }, StoreSql.ReadHost, ct);

    public Task InsertChallengeAsync(EnrolmentChallengeRecord challenge, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.InsertChallenge, cmd => StoreSql.BindChallenge(cmd, challenge), ct);

    public Task InsertNonceAsync(NonceRecord nonce, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.InsertNonce, cmd => StoreSql.BindNonce(cmd, nonce), ct);

    public async Task<bool> ConsumeNonceAsync(string hostId, string nonce, DateTimeOffset now, CancellationToken ct = default) =>
        await ExecuteAsync(StoreSql.ConsumeNonce, cmd => StoreSql.BindConsume(cmd, hostId, nonce, now), ct) == 1;

    public async Task<bool> InsertNonceForHostAsync(NonceRecord nonce, CancellationToken ct = default) =>
        await ExecuteAsync(StoreSql.InsertNonceForHost, cmd => StoreSql.BindNonce(cmd, nonce), ct) == 1;

    public abstract Task<AttestationStart> TakeNonceForAttestationAsync(string hostId, string nonce, DateTimeOffset now, CancellationToken ct = default);

    public Task<int> PurgeExpiredAsync(DateTimeOffset now, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.PurgeExpired, cmd => StoreSql.Bind(cmd, "@now", StoreSql.Ms(now)), ct);

    public Task InsertPolicyAsync(PolicyRecord policy, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.InsertPolicy, cmd => StoreSql.BindPolicy(cmd, policy), ct);

    public Task<PolicyRecord?> GetPolicyAsync(string id, int? version = null, CancellationToken ct = default) =>
        version is { } v
            ? QuerySingleAsync(StoreSql.SelectPolicy + " WHERE id = @id AND version = @version",
                cmd => { StoreSql.Bind(cmd, "@id", id); StoreSql.Bind(cmd, "@version", (long)v); }, StoreSql.ReadPolicy, ct)
            : QuerySingleAsync(StoreSql.SelectPolicy + " WHERE id = @id ORDER BY version DESC LIMIT 1",
                cmd => StoreSql.Bind(cmd, "@id", id), StoreSql.ReadPolicy, ct);

    public Task<IReadOnlyList<PolicyRecord>> ListPoliciesAsync(CancellationToken ct = default) =>
        QueryAsync(StoreSql.SelectLatestPolicies, _ => { }, StoreSql.ReadPolicy, ct);

    public Task UpsertGroupAsync(HostGroupRecord group, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.UpsertGroup, cmd => StoreSql.BindGroup(cmd, group), ct);

    public Task<HostGroupRecord?> GetGroupAsync(string name, CancellationToken ct = default) =>
        QuerySingleAsync(StoreSql.SelectGroup + " WHERE name = @name", cmd => StoreSql.Bind(cmd, "@name", name), StoreSql.ReadGroup, ct);

    public Task<IReadOnlyList<HostGroupRecord>> ListGroupsAsync(CancellationToken ct = default) =>
        QueryAsync(StoreSql.SelectGroup + " ORDER BY name", _ => { }, StoreSql.ReadGroup, ct);

    public async Task<bool> DeleteGroupAsync(string name, CancellationToken ct = default) =>
        await ExecuteAsync("DELETE FROM host_groups WHERE name = @name", cmd => StoreSql.Bind(cmd, "@name", name), ct) == 1;

    public Task InsertTokenAsync(IssuedTokenRecord token, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.InsertToken, cmd => StoreSql.BindToken(cmd, token), ct);

    public Task<IssuedTokenRecord?> GetTokenAsync(string jti, CancellationToken ct = default) =>
        QuerySingleAsync(StoreSql.SelectToken + " WHERE jti = @jti", cmd => StoreSql.Bind(cmd, "@jti", jti), StoreSql.ReadToken, ct);

    public Task<int> RevokeHostTokensAsync(string hostId, DateTimeOffset now, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.RevokeHostTokens, cmd => { StoreSql.Bind(cmd, "@host", hostId); StoreSql.Bind(cmd, "@now", StoreSql.Ms(now)); }, ct);

    public Task InsertApiTokenAsync(ApiTokenRecord token, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.InsertApiToken, cmd => StoreSql.BindApiToken(cmd, token), ct);

    public Task<ApiTokenRecord?> FindApiTokenAsync(byte[] tokenHash, CancellationToken ct = default) =>
        QuerySingleAsync(StoreSql.SelectApiToken + " WHERE token_hash = @hash", cmd => StoreSql.Bind(cmd, "@hash", tokenHash), StoreSql.ReadApiToken, ct);

    public Task<IReadOnlyList<ApiTokenRecord>> ListApiTokensAsync(CancellationToken ct = default) =>
        QueryAsync(StoreSql.SelectApiToken + " ORDER BY created_at, id", _ => { }, StoreSql.ReadApiToken, ct);

    public async Task<bool> DeleteApiTokenAsync(string id, CancellationToken ct = default) =>
        await ExecuteAsync("DELETE FROM api_tokens WHERE id = @id", cmd => StoreSql.Bind(cmd, "@id", id), ct) == 1;

    public Task UpsertEkAllowAsync(EkAllowRecord allow, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.UpsertEkAllow, cmd => StoreSql.BindEkAllow(cmd, allow), ct);

    public Task<EkAllowRecord?> GetEkAllowAsync(string ekName, CancellationToken ct = default) =>
        QuerySingleAsync(StoreSql.SelectEkAllow + " WHERE ek_name = @ek_name", cmd => StoreSql.Bind(cmd, "@ek_name", ekName), StoreSql.ReadEkAllow, ct);

    public Task<IReadOnlyList<EkAllowRecord>> ListEkAllowsAsync(CancellationToken ct = default) =>
        QueryAsync(StoreSql.SelectEkAllow + " ORDER BY allowed_at, ek_name", _ => { }, StoreSql.ReadEkAllow, ct);

    public async Task<bool> DeleteEkAllowAsync(string ekName, CancellationToken ct = default) =>
        await ExecuteAsync("DELETE FROM ek_allowlist WHERE ek_name = @ek_name", cmd => StoreSql.Bind(cmd, "@ek_name", ekName), ct) == 1;

    public Task SaveEvidenceAsync(EvidenceRecord evidence, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.SaveEvidence, cmd => StoreSql.BindEvidence(cmd, evidence), ct);

    public async Task RecordAttestationAsync(HostRecord host, IssuedTokenRecord token, EvidenceRecord evidence, CancellationToken ct = default)
    {
        var write = new AttestationWrite(host, token, evidence);
        var counts = await ExecuteAtomicallyAsync(AttestationStatements(write), ct);
        CheckRecorded(write, counts[0]);
    }

    public abstract Task<IReadOnlyList<AuditRecord>> RecordAttestationAsync(HostRecord host, IssuedTokenRecord token, EvidenceRecord evidence,
        IReadOnlyList<AuditEntry> audit, CancellationToken ct = default);

    /// <summary>
    /// An attestation's three statements, the host first: when it no longer exists the token's and
    /// evidence's foreign keys fail, and with them the whole transaction.
    /// </summary>
    protected static (string Sql, Action<DbCommand> Bind)[] AttestationStatements(AttestationWrite write)
    {
        var (host, token, evidence) = write;
        if (token.HostId != host.Id || evidence.HostId != host.Id)
        {
            throw new ArgumentException("the token and the evidence must be the host's");
        }
        return
        [
            (StoreSql.UpdateHostAttestation, cmd => StoreSql.BindHostAttestation(cmd, host)),
            (StoreSql.InsertToken, cmd => StoreSql.BindToken(cmd, token)),
            (StoreSql.SaveEvidence, cmd => StoreSql.BindEvidence(cmd, evidence)),
        ];
    }

    /// <summary>Throws when the host's update (the first of <see cref="AttestationStatements"/>) changed no row.</summary>
    protected static void CheckRecorded(AttestationWrite write, int hostRows)
    {
        if (hostRows == 0)
        {
            throw new KeyNotFoundException($"host '{write.Host.Id}' does not exist");
        }
    }

    public Task<EvidenceRecord?> GetLatestEvidenceAsync(string hostId, CancellationToken ct = default) =>
        QuerySingleAsync(StoreSql.SelectEvidence + " WHERE host_id = @host", cmd => StoreSql.Bind(cmd, "@host", hostId), StoreSql.ReadEvidence, ct);

    public Task<IReadOnlyList<AuditRecord>> ReadAuditAsync(long fromSeq, int max, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(max);
        return QueryAsync(StoreSql.SelectAudit, cmd => { StoreSql.Bind(cmd, "@from", fromSeq); StoreSql.Bind(cmd, "@max", max); }, StoreSql.ReadAudit, ct);
    }
}

using System.Data.Common;
using Npgsql;

namespace Rempart.Guardian.Storage;

/// <summary>
/// The replicated store: several Guardians share one PostgreSQL database (the schema is the
/// connection's <c>search_path</c>). Single-statement operations are atomic on their own —
/// <c>DELETE … RETURNING</c> and a conditional <c>DELETE</c> let exactly one of many concurrent
/// callers take a challenge or consume a nonce. Migrations and audit appends serialise on
/// transaction-scoped advisory locks, so they are safe across replicas and released even when a
/// replica dies mid-transaction.
/// </summary>
public sealed class PostgresGuardianStore : IGuardianStore
{
    /// <summary>Advisory lock keys ("REMPART" followed by a purpose byte), database-wide.</summary>
    internal const long MigrationLockKey = 0x52454D50_41525401;

    internal const long AuditLockKey = 0x52454D50_41525402;

    private readonly NpgsqlDataSource _dataSource;

    public PostgresGuardianStore(string connectionString)
    {
        ArgumentException.ThrowIfNullOrEmpty(connectionString);
        _dataSource = NpgsqlDataSource.Create(connectionString);
    }

    public Task MigrateAsync(CancellationToken ct = default) =>
        InTransactionAsync(MigrationLockKey, async (c, tx) => { await Migrations.ApplyAsync(c, tx, SqlDialect.Postgres, ct); return 0; }, ct);

    public async Task<int> SchemaVersionAsync(CancellationToken ct = default)
    {
        await using var c = await _dataSource.OpenConnectionAsync(ct);
        await using var cmd = new NpgsqlCommand("SELECT to_regclass('schema_version') IS NOT NULL", c);
        return await cmd.ExecuteScalarAsync(ct) is true ? await Migrations.CurrentAsync(c, null, ct) : 0;
    }

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

    public async Task<EnrolmentChallengeRecord?> TakeChallengeAsync(string id, DateTimeOffset now, CancellationToken ct = default)
    {
        var taken = await QuerySingleAsync(StoreSql.TakeChallenge, cmd => StoreSql.Bind(cmd, "@id", id), StoreSql.ReadChallenge, ct);
        return taken is not null && taken.ExpiresAt > now ? taken : null;
    }

    public Task InsertNonceAsync(NonceRecord nonce, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.InsertNonce, cmd => StoreSql.BindNonce(cmd, nonce), ct);

    public async Task<bool> ConsumeNonceAsync(string hostId, string nonce, DateTimeOffset now, CancellationToken ct = default) =>
        await ExecuteAsync(StoreSql.ConsumeNonce, cmd => StoreSql.BindConsume(cmd, hostId, nonce, now), ct) == 1;

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

    public Task SaveEvidenceAsync(EvidenceRecord evidence, CancellationToken ct = default) =>
        ExecuteAsync(StoreSql.SaveEvidence, cmd => StoreSql.BindEvidence(cmd, evidence), ct);

    public Task<EvidenceRecord?> GetLatestEvidenceAsync(string hostId, CancellationToken ct = default) =>
        QuerySingleAsync(StoreSql.SelectEvidence + " WHERE host_id = @host", cmd => StoreSql.Bind(cmd, "@host", hostId), StoreSql.ReadEvidence, ct);

    public Task<AuditRecord> AppendAuditAsync(string kind, string subject, string dataJson, DateTimeOffset at, CancellationToken ct = default) =>
        // Under READ COMMITTED, the read after the lock sees the previous holder's committed record.
        InTransactionAsync(AuditLockKey, (c, tx) => StoreSql.AppendAuditAsync(c, tx, kind, subject, dataJson, at, ct), ct);

    public Task<IReadOnlyList<AuditRecord>> ReadAuditAsync(long fromSeq, int max, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(max);
        return QueryAsync(StoreSql.SelectAudit, cmd => { StoreSql.Bind(cmd, "@from", fromSeq); StoreSql.Bind(cmd, "@max", max); }, StoreSql.ReadAudit, ct);
    }

    public ValueTask DisposeAsync() => _dataSource.DisposeAsync();

    /// <summary>Runs <paramref name="work"/> in a transaction that first takes the advisory lock <paramref name="lockKey"/>.</summary>
    private async Task<T> InTransactionAsync<T>(long lockKey, Func<DbConnection, DbTransaction, Task<T>> work, CancellationToken ct)
    {
        await using var c = await _dataSource.OpenConnectionAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        await using (var lockCmd = new NpgsqlCommand("SELECT pg_advisory_xact_lock(@key)", c, tx))
        {
            lockCmd.Parameters.AddWithValue("key", lockKey);
            await lockCmd.ExecuteNonQueryAsync(ct);
        }
        var result = await work(c, tx);
        await tx.CommitAsync(ct);
        return result;
    }

    private async Task<int> ExecuteAsync(string sql, Action<DbCommand> bind, CancellationToken ct)
    {
        await using var cmd = _dataSource.CreateCommand(sql);
        bind(cmd);
        return await cmd.ExecuteNonQueryAsync(ct);
    }

    private async Task<T?> QuerySingleAsync<T>(string sql, Action<DbCommand> bind, Func<DbDataReader, T> read, CancellationToken ct)
        where T : class
    {
        await using var cmd = _dataSource.CreateCommand(sql);
        bind(cmd);
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        return await reader.ReadAsync(ct) ? read(reader) : null;
    }

    private async Task<IReadOnlyList<T>> QueryAsync<T>(string sql, Action<DbCommand> bind, Func<DbDataReader, T> read, CancellationToken ct)
    {
        await using var cmd = _dataSource.CreateCommand(sql);
        bind(cmd);
        return await StoreSql.ReadAllAsync(cmd, read, ct);
    }
}

using System.Data.Common;
using Microsoft.Data.Sqlite;

namespace Rempart.Guardian.Storage;

/// <summary>
/// The embedded store: <c>guardian.db</c> in a data folder, in WAL mode (readers never wait for
/// the writer), with foreign keys enforced and a busy timeout for other processes. Within this
/// process, writes queue on one async gate and run in <c>BEGIN IMMEDIATE</c> transactions, so a
/// read-then-write (the audit chain) holds the write lock from its first read and never needs a
/// retry; reads use pooled connections concurrently. Timestamps are Unix milliseconds.
/// </summary>
public sealed class SqliteGuardianStore : IGuardianStore
{
    public const string FileName = "guardian.db";
    private const int BusyTimeoutMs = 10_000;

    private readonly string _connectionString;
    private readonly SemaphoreSlim _writeGate = new(1, 1);

    public SqliteGuardianStore(string dataDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(dataDirectory);
        Directory.CreateDirectory(dataDirectory);
        Path = System.IO.Path.Combine(dataDirectory, FileName);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = Path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            ForeignKeys = true,
            Pooling = true,
            DefaultTimeout = BusyTimeoutMs / 1000,
        }.ToString();
        // journal_mode is persistent in the file; switching needs no concurrent user, so it is done here, once.
        using var c = Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "PRAGMA journal_mode = WAL";
        var mode = cmd.ExecuteScalar() as string;
        if (!string.Equals(mode, "wal", StringComparison.OrdinalIgnoreCase))
        {
            throw new InvalidOperationException($"{Path}: SQLite refused WAL mode (journal_mode is '{mode}')");
        }
    }

    /// <summary>The database file.</summary>
    public string Path { get; }

    public async Task MigrateAsync(CancellationToken ct = default) =>
        await WriteAsync(async (c, tx) => { await Migrations.ApplyAsync(c, tx, SqlDialect.Sqlite, ct); return 0; }, ct);

    public async Task<int> SchemaVersionAsync(CancellationToken ct = default)
    {
        await using var c = await OpenAsync(ct);
        await using var cmd = Command(c, null, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'");
        return Convert.ToInt64(await cmd.ExecuteScalarAsync(ct), System.Globalization.CultureInfo.InvariantCulture) == 0
            ? 0
            : await Migrations.CurrentAsync(c, null, ct);
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

    public Task<EnrolmentChallengeRecord?> TakeChallengeAsync(string id, DateTimeOffset now, CancellationToken ct = default) =>
        WriteAsync(async (c, tx) =>
        {
            await using var cmd = Command(c, tx, StoreSql.TakeChallenge);
            StoreSql.Bind(cmd, "@id", id);
            var taken = await ReadSingleAsync(cmd, StoreSql.ReadChallenge, ct);
            return taken is not null && taken.ExpiresAt > now ? taken : null;
        }, ct);

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
        // BEGIN IMMEDIATE: the write lock is held from the read of the last record to the commit.
        WriteAsync((c, tx) => StoreSql.AppendAuditAsync(c, tx, kind, subject, dataJson, at, ct), ct);

    public Task<IReadOnlyList<AuditRecord>> ReadAuditAsync(long fromSeq, int max, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(max);
        return QueryAsync(StoreSql.SelectAudit, cmd => { StoreSql.Bind(cmd, "@from", fromSeq); StoreSql.Bind(cmd, "@max", max); }, StoreSql.ReadAudit, ct);
    }

    public async ValueTask DisposeAsync()
    {
        // Close the pooled connections so the file (and its -wal, -shm) is released.
        await using (var c = new SqliteConnection(_connectionString))
        {
            SqliteConnection.ClearPool(c);
        }
        _writeGate.Dispose();
    }

    private SqliteConnection Open()
    {
        var c = new SqliteConnection(_connectionString);
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = $"PRAGMA busy_timeout = {BusyTimeoutMs}";
        cmd.ExecuteNonQuery();
        return c;
    }

    private async Task<SqliteConnection> OpenAsync(CancellationToken ct)
    {
        var c = new SqliteConnection(_connectionString);
        try
        {
            await c.OpenAsync(ct);
            await using var cmd = Command(c, null, $"PRAGMA busy_timeout = {BusyTimeoutMs}");
            await cmd.ExecuteNonQueryAsync(ct);
            return c;
        }
        catch
        {
            await c.DisposeAsync();
            throw;
        }
    }

    /// <summary>Runs <paramref name="work"/> in a <c>BEGIN IMMEDIATE</c> transaction, one writer of this store at a time.</summary>
    private async Task<T> WriteAsync<T>(Func<DbConnection, DbTransaction, Task<T>> work, CancellationToken ct)
    {
        await _writeGate.WaitAsync(ct);
        try
        {
            await using var c = await OpenAsync(ct);
            await using var tx = c.BeginTransaction(deferred: false);
            var result = await work(c, tx);
            await tx.CommitAsync(ct);
            return result;
        }
        finally
        {
            _writeGate.Release();
        }
    }

    private Task<int> ExecuteAsync(string sql, Action<DbCommand> bind, CancellationToken ct) =>
        WriteAsync(async (c, tx) =>
        {
            await using var cmd = Command(c, tx, sql);
            bind(cmd);
            return await cmd.ExecuteNonQueryAsync(ct);
        }, ct);

    private async Task<T?> QuerySingleAsync<T>(string sql, Action<DbCommand> bind, Func<DbDataReader, T> read, CancellationToken ct)
        where T : class
    {
        await using var c = await OpenAsync(ct);
        await using var cmd = Command(c, null, sql);
        bind(cmd);
        return await ReadSingleAsync(cmd, read, ct);
    }

    private async Task<IReadOnlyList<T>> QueryAsync<T>(string sql, Action<DbCommand> bind, Func<DbDataReader, T> read, CancellationToken ct)
    {
        await using var c = await OpenAsync(ct);
        await using var cmd = Command(c, null, sql);
        bind(cmd);
        return await StoreSql.ReadAllAsync(cmd, read, ct);
    }

    private static async Task<T?> ReadSingleAsync<T>(DbCommand cmd, Func<DbDataReader, T> read, CancellationToken ct)
        where T : class
    {
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        return await reader.ReadAsync(ct) ? read(reader) : null;
    }

    private static DbCommand Command(DbConnection c, DbTransaction? tx, string sql)
    {
        var cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = sql;
        return cmd;
    }
}

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
public sealed class SqliteGuardianStore : SqlGuardianStore
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

    public override async Task MigrateAsync(CancellationToken ct = default) =>
        await WriteAsync(async (c, tx) => { await Migrations.ApplyAsync(c, tx, SqlDialect.Sqlite, ct); return 0; }, ct);

    public override async Task<int> SchemaVersionAsync(CancellationToken ct = default)
    {
        await using var c = await OpenAsync(ct);
        await using var cmd = Command(c, null, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'");
        return Convert.ToInt64(await cmd.ExecuteScalarAsync(ct), System.Globalization.CultureInfo.InvariantCulture) == 0
            ? 0
            : await Migrations.CurrentAsync(c, null, ct);
    }

    public override Task<EnrolmentChallengeRecord?> TakeChallengeAsync(string id, DateTimeOffset now, CancellationToken ct = default) =>
        WriteAsync(async (c, tx) =>
        {
            await using var cmd = Command(c, tx, StoreSql.TakeChallenge);
            StoreSql.Bind(cmd, "@id", id);
            var taken = await ReadSingleAsync(cmd, StoreSql.ReadChallenge, ct);
            return taken is not null && taken.ExpiresAt > now ? taken : null;
        }, ct);

    public override Task<AuditRecord> AppendAuditAsync(string kind, string subject, string dataJson, DateTimeOffset at, CancellationToken ct = default) =>
        // BEGIN IMMEDIATE: the write lock is held from the read of the last record to the commit.
        WriteAsync((c, tx) => StoreSql.AppendAuditAsync(c, tx, kind, subject, dataJson, at, ct), ct);

    public override async ValueTask DisposeAsync()
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

    protected override Task<int> ExecuteAsync(string sql, Action<DbCommand> bind, CancellationToken ct) =>
        WriteAsync(async (c, tx) =>
        {
            await using var cmd = Command(c, tx, sql);
            bind(cmd);
            return await cmd.ExecuteNonQueryAsync(ct);
        }, ct);

    protected override async Task<T?> QuerySingleAsync<T>(string sql, Action<DbCommand> bind, Func<DbDataReader, T> read, CancellationToken ct)
        where T : class
    {
        await using var c = await OpenAsync(ct);
        await using var cmd = Command(c, null, sql);
        bind(cmd);
        return await ReadSingleAsync(cmd, read, ct);
    }

    protected override async Task<IReadOnlyList<T>> QueryAsync<T>(string sql, Action<DbCommand> bind, Func<DbDataReader, T> read, CancellationToken ct)
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

using System.Data.Common;
using System.Threading.Channels;
using Microsoft.Data.Sqlite;

namespace Rempart.Guardian.Storage;

/// <summary>
/// The embedded store: <c>guardian.db</c> in a data folder, in WAL mode (readers never wait for
/// the writer), with foreign keys enforced and a busy timeout for other processes. Within this
/// process, writes queue for one writer that runs them in <c>BEGIN IMMEDIATE</c> transactions, so a
/// read-then-write (the audit chain) holds the write lock from its first read and never needs a
/// retry; reads use pooled connections concurrently. Timestamps are Unix milliseconds.
/// <para>
/// Group commit: every commit waits for the WAL to reach the disk (synchronous = FULL, the default,
/// is kept), and that sync — not the statements — is what a write costs. So the writer takes every
/// write queued while the previous commit was syncing and runs them in one transaction, each in its
/// own savepoint (one failing write is rolled back alone and fails alone), then commits once. A
/// caller's write completes only after that commit is durable, exactly as before; the queue order is
/// the order of execution, so audit appends in one batch still chain one after the other.
/// </para>
/// </summary>
public sealed class SqliteGuardianStore : SqlGuardianStore
{
    public const string FileName = "guardian.db";
    private const int BusyTimeoutMs = 10_000;

    /// <summary>At most this many writes share a commit (bounds one transaction's size and the wait of its first writer).</summary>
    private const int MaxWritesPerCommit = 256;

    private readonly string _connectionString;
    private readonly Channel<PendingWrite> _writes = Channel.CreateUnbounded<PendingWrite>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _writer;

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
        _writer = Task.Run(WriterAsync);
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

    /// <summary>The conditional delete and the read of the host (with its policy reference), in one write transaction.</summary>
    public override Task<AttestationStart> TakeNonceForAttestationAsync(string hostId, string nonce, DateTimeOffset now, CancellationToken ct = default) =>
        WriteAsync(async (c, tx) =>
        {
            bool consumed;
            await using (var delete = Command(c, tx, StoreSql.ConsumeNonceOfAttestableHost))
            {
                StoreSql.BindConsume(delete, hostId, nonce, now);
                consumed = await delete.ExecuteNonQueryAsync(ct) == 1;
            }
            await using var select = Command(c, tx, StoreSql.SelectHostForAttestation + StoreSql.FromHostForAttestation);
            StoreSql.Bind(select, "@host", hostId);
            await using var reader = await select.ExecuteReaderAsync(ct);
            if (!await reader.ReadAsync(ct))
            {
                return new AttestationStart(null, consumed);
            }
            var (host, policyId, policyVersion) = StoreSql.ReadAttestationStart(reader);
            return new AttestationStart(host, consumed, policyId, policyVersion);
        }, ct);

    public override Task<AuditRecord> AppendAuditAsync(string kind, string subject, string dataJson, DateTimeOffset at, CancellationToken ct = default) =>
        // BEGIN IMMEDIATE: the write lock is held from the read of the last record to the commit.
        WriteAsync((c, tx) => StoreSql.AppendAuditAsync(c, tx, kind, subject, dataJson, at, ct), ct);

    /// <summary>
    /// The attestation's statements and its audit records in one write of the single writer (one
    /// savepoint of a group commit): a failing statement rolls back its records too.
    /// </summary>
    public override Task<IReadOnlyList<AuditRecord>> RecordAttestationAsync(HostRecord host, IssuedTokenRecord token, EvidenceRecord evidence,
        IReadOnlyList<AuditEntry> audit, CancellationToken ct = default)
    {
        var write = new AttestationWrite(host, token, evidence);
        var statements = AttestationStatements(write);
        ArgumentOutOfRangeException.ThrowIfZero(audit.Count);
        return WriteAsync(async (c, tx) =>
        {
            for (int i = 0; i < statements.Length; i++)
            {
                await using var cmd = Command(c, tx, statements[i].Sql);
                statements[i].Bind(cmd);
                int rows = await cmd.ExecuteNonQueryAsync(ct);
                if (i == 0)
                {
                    CheckRecorded(write, rows);
                }
            }
            return await StoreSql.AppendAuditAsync(c, tx, audit, ct);
        }, ct);
    }

    public override async ValueTask DisposeAsync()
    {
        // Writes already queued are still committed; later ones are refused by the closed queue.
        _writes.Writer.TryComplete();
        await _writer;
        // Close the pooled connections so the file (and its -wal, -shm) is released.
        await using (var c = new SqliteConnection(_connectionString))
        {
            SqliteConnection.ClearPool(c);
        }
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

    /// <summary>
    /// Runs <paramref name="work"/> in a <c>BEGIN IMMEDIATE</c> transaction of this store's single
    /// writer, possibly with other queued writes (each in its own savepoint); completes once committed.
    /// </summary>
    private Task<T> WriteAsync<T>(Func<DbConnection, DbTransaction, Task<T>> work, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        var pending = new PendingWrite<T>(work, ct);
        if (!_writes.Writer.TryWrite(pending))
        {
            throw new ObjectDisposedException(nameof(SqliteGuardianStore));
        }
        return pending.Task;
    }

    /// <summary>The single writer: each turn commits every write queued since the last commit.</summary>
    private async Task WriterAsync()
    {
        var batch = new List<PendingWrite>(MaxWritesPerCommit);
        while (await _writes.Reader.WaitToReadAsync())
        {
            batch.Clear();
            while (batch.Count < MaxWritesPerCommit && _writes.Reader.TryRead(out var w))
            {
                batch.Add(w);
            }
            await CommitAsync(batch);
        }
    }

    private async Task CommitAsync(List<PendingWrite> batch)
    {
        var ran = new List<PendingWrite>(batch.Count);
        try
        {
            await using var c = await OpenAsync(CancellationToken.None);
            await using var tx = c.BeginTransaction(deferred: false);
            foreach (var w in batch)
            {
                if (w.Cancellation.IsCancellationRequested)
                {
                    w.Cancel();
                    continue;
                }
                if (batch.Count == 1)
                {
                    // Alone in its transaction: a failure rolls the transaction back (disposed uncommitted).
                    await w.RunAsync(c, tx);
                    ran.Add(w);
                    continue;
                }
                await tx.SaveAsync("w");
                try
                {
                    await w.RunAsync(c, tx);
                    await tx.ReleaseAsync("w");
                    ran.Add(w);
                }
                catch (Exception e)
                {
                    // This write alone is undone and fails; the others of the batch go on. (Should the
                    // rollback itself fail, the transaction is unusable: the outer handler fails them all.)
                    await tx.RollbackAsync("w");
                    await tx.ReleaseAsync("w");
                    w.Fail(e);
                }
            }
            await tx.CommitAsync();
        }
        catch (Exception e)
        {
            // Opening, beginning, a savepoint or the commit failed: nothing of this batch is stored.
            foreach (var w in batch)
            {
                w.Fail(e);
            }
            return;
        }
        foreach (var w in ran)
        {
            w.Complete();
        }
    }

    /// <summary>A queued write: its work, its caller's cancellation, and the task the caller awaits.</summary>
    private abstract class PendingWrite(CancellationToken cancellation)
    {
        public CancellationToken Cancellation { get; } = cancellation;

        public abstract Task RunAsync(DbConnection c, DbTransaction tx);

        /// <summary>After the commit: the caller gets its result.</summary>
        public abstract void Complete();

        /// <summary>The caller gets the error (a no-op when it already has an outcome).</summary>
        public abstract void Fail(Exception e);

        public abstract void Cancel();
    }

    private sealed class PendingWrite<T>(Func<DbConnection, DbTransaction, Task<T>> work, CancellationToken cancellation) : PendingWrite(cancellation)
    {
        private readonly TaskCompletionSource<T> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private T _result = default!;

        public Task<T> Task => _done.Task;

        public override async Task RunAsync(DbConnection c, DbTransaction tx) => _result = await work(c, tx);

        public override void Complete() => _done.TrySetResult(_result);

        public override void Fail(Exception e)
        {
            if (e is OperationCanceledException)
            {
                _done.TrySetCanceled(Cancellation);
            }
            else
            {
                _done.TrySetException(e);
            }
        }

        public override void Cancel() => _done.TrySetCanceled(Cancellation);
    }

    protected override Task<int> ExecuteAsync(string sql, Action<DbCommand> bind, CancellationToken ct) =>
        WriteAsync(async (c, tx) =>
        {
            await using var cmd = Command(c, tx, sql);
            bind(cmd);
            return await cmd.ExecuteNonQueryAsync(ct);
        }, ct);

    protected override Task<IReadOnlyList<int>> ExecuteAtomicallyAsync(IReadOnlyList<(string Sql, Action<DbCommand> Bind)> statements, CancellationToken ct) =>
        WriteAsync<IReadOnlyList<int>>(async (c, tx) =>
        {
            var counts = new int[statements.Count];
            for (int i = 0; i < counts.Length; i++)
            {
                await using var cmd = Command(c, tx, statements[i].Sql);
                statements[i].Bind(cmd);
                counts[i] = await cmd.ExecuteNonQueryAsync(ct);
            }
            return counts;
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

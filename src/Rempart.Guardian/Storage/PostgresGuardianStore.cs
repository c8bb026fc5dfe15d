using System.Data.Common;
using Npgsql;
using NpgsqlTypes;

namespace Rempart.Guardian.Storage;

/// <summary>
/// The replicated store: several Guardians share one PostgreSQL database (the schema is the
/// connection's <c>search_path</c>). Single-statement operations are atomic on their own —
/// <c>DELETE … RETURNING</c> and a conditional <c>DELETE</c> let exactly one of many concurrent
/// callers take a challenge or consume a nonce. Migrations and audit appends serialise on
/// transaction-scoped advisory locks, so they are safe across replicas and released even when a
/// replica dies mid-transaction.
/// </summary>
public sealed class PostgresGuardianStore : SqlGuardianStore
{
    /// <summary>Advisory lock keys ("REMPART" followed by a purpose byte), database-wide.</summary>
    internal const long MigrationLockKey = 0x52454D50_41525401;

    internal const long AuditLockKey = 0x52454D50_41525402;

    private readonly NpgsqlDataSource _dataSource;
    private readonly AuditBatcher _audit;

    /// <summary>The last audit record this store appended (seq, hash), null before its first append or after a conflict.</summary>
    private (long Seq, byte[] Hash)? _auditHead;

    public PostgresGuardianStore(string connectionString)
    {
        ArgumentException.ThrowIfNullOrEmpty(connectionString);
        var builder = new NpgsqlDataSourceBuilder(connectionString);
        // The Guardian runs a few dozen fixed statements all day: prepared once per connection, the
        // server stops parsing and planning them (unless the operator's connection string says otherwise).
        if (builder.ConnectionStringBuilder.MaxAutoPrepare == 0)
        {
            builder.ConnectionStringBuilder.MaxAutoPrepare = 64;
            // Returning a connection to the pool would otherwise send six reset statements (the
            // prepared statements make Npgsql reset piecewise) before its next use. Nothing here
            // changes session state: advisory locks are transaction-scoped and a transaction left
            // open is rolled back on close either way.
            builder.ConnectionStringBuilder.NoResetOnClose = true;
        }
        _dataSource = builder.Build();
        // A PostgresException is the server's refusal of a statement: the batch's transaction was
        // rolled back, so its callers can be tried one by one (never after a lost connection, when
        // the commit's outcome is unknown).
        _audit = new AuditBatcher(AppendAuditBatchAsync, e => e is PostgresException);
    }

    public override Task MigrateAsync(CancellationToken ct = default) =>
        InTransactionAsync(MigrationLockKey, async (c, tx) => { await Migrations.ApplyAsync(c, tx, SqlDialect.Postgres, ct); return 0; }, ct);

    public override async Task<int> SchemaVersionAsync(CancellationToken ct = default)
    {
        await using var c = await _dataSource.OpenConnectionAsync(ct);
        await using var cmd = new NpgsqlCommand("SELECT to_regclass('schema_version') IS NOT NULL", c);
        return await cmd.ExecuteScalarAsync(ct) is true ? await Migrations.CurrentAsync(c, null, ct) : 0;
    }

    public override async Task<EnrolmentChallengeRecord?> TakeChallengeAsync(string id, DateTimeOffset now, CancellationToken ct = default)
    {
        var taken = await QuerySingleAsync(StoreSql.TakeChallenge, cmd => StoreSql.Bind(cmd, "@id", id), StoreSql.ReadChallenge, ct);
        return taken is not null && taken.ExpiresAt > now ? taken : null;
    }

    /// <summary>
    /// One statement, one round trip: a data-modifying CTE deletes the nonce (when the host may
    /// attest) and the host row, with its group's policy reference, is read in the same snapshot.
    /// PostgreSQL runs the DELETE to completion whether or not the host row exists.
    /// </summary>
    public override async Task<AttestationStart> TakeNonceForAttestationAsync(string hostId, string nonce, DateTimeOffset now, CancellationToken ct = default)
    {
        await using var cmd = _dataSource.CreateCommand(
            $"WITH consumed AS ({StoreSql.ConsumeNonceOfAttestableHost} RETURNING 1) " +
            $"{StoreSql.SelectHostForAttestation}, (SELECT count(*) FROM consumed){StoreSql.FromHostForAttestation}");
        StoreSql.BindConsume(cmd, hostId, nonce, now);
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        if (!await reader.ReadAsync(ct))
        {
            return new AttestationStart(null, false);
        }
        var (host, policyId, policyVersion) = StoreSql.ReadAttestationStart(reader);
        return new AttestationStart(host, reader.GetInt64(StoreSql.HostColumnCount + 2) == 1, policyId, policyVersion);
    }

    /// <summary>
    /// Appends concurrent with a batch being written queue for the next batch (<see cref="AuditBatcher"/>),
    /// which <see cref="AppendAuditBatchAsync"/> writes under the audit advisory lock.
    /// </summary>
    public override Task<AuditRecord> AppendAuditAsync(string kind, string subject, string dataJson, DateTimeOffset at, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(kind);
        ArgumentNullException.ThrowIfNull(subject);
        ArgumentNullException.ThrowIfNull(dataJson);
        return _audit.AppendAsync(new AuditEntry(kind, subject, dataJson, at), ct);
    }

    /// <summary>
    /// Through the audit batcher: the attestation's statements run in the transaction of the audit
    /// batch that appends its records, so a batch of attestations costs one commit (and one round
    /// trip), not one transaction each plus their share of the audit's.
    /// </summary>
    public override async Task<IReadOnlyList<AuditRecord>> RecordAttestationAsync(HostRecord host, IssuedTokenRecord token, EvidenceRecord evidence,
        IReadOnlyList<AuditEntry> audit, CancellationToken ct = default)
    {
        var write = new AttestationWrite(host, token, evidence);
        _ = AttestationStatements(write); // checks the records belong together before anything is queued
        return await _audit.AppendAsync(new AuditWork(audit, write), ct);
    }

    /// <summary>
    /// One batch of audit records, with the attestations they record (called by the batcher's single
    /// writer only; the batch is written for several callers, so no one caller's cancellation may
    /// abort it). Once this store knows the head — the last record it appended — the records are
    /// chained to it and sent with the lock in one round trip, as one implicit transaction:
    /// <c>pg_advisory_xact_lock</c>, each attestation's host update, token and evidence, then one
    /// INSERT of every record (a fixed statement over arrays, prepared once, whatever the batch's
    /// size). When another replica appended in between, record head + 1 exists and the unique seq
    /// (and prev_hash) rejects the whole transaction; the batch is then chained again to the head
    /// read under the lock, as on the first append. The chain is the same record by record either way.
    /// </summary>
    private async Task<IReadOnlyList<AuditRecord>> AppendAuditBatchAsync(IReadOnlyList<AuditWork> work)
    {
        var entries = work.SelectMany(w => w.Entries).ToList();
        var attestations = work.Where(w => w.Attestation is not null).Select(w => w.Attestation!).ToList();
        if (_auditHead is { } head)
        {
            var records = StoreSql.ChainAudit(head.Seq, head.Hash, entries);
            try
            {
                await using var batch = _dataSource.CreateBatch();
                var lockCommand = new NpgsqlBatchCommand(AdvisoryLockSql);
                lockCommand.Parameters.AddWithValue("key", AuditLockKey);
                batch.BatchCommands.Add(lockCommand);
                foreach (var a in attestations)
                {
                    foreach (var (sql, bind) in AttestationStatements(a))
                    {
                        batch.BatchCommands.Add(BatchCommand(sql, bind));
                    }
                }
                var insert = new NpgsqlBatchCommand(InsertAuditSql);
                BindAudit(insert.Parameters, records);
                batch.BatchCommands.Add(insert);
                await batch.ExecuteNonQueryAsync(CancellationToken.None);
                for (int i = 0; i < attestations.Count; i++)
                {
                    // The host's update is the first of its three (after the lock). A missing host fails
                    // its token's foreign key, and the transaction with it, so this is only a safeguard.
                    CheckRecorded(attestations[i], batch.BatchCommands[1 + 3 * i].RecordsAffected);
                }
                _auditHead = (records[^1].Seq, records[^1].Hash);
                return records;
            }
            catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UniqueViolation && e.TableName == "audit_log")
            {
                // The head moved (another replica): nothing of this batch was stored.
                _auditHead = null;
            }
        }
        var appended = await InTransactionAsync(AuditLockKey, async (c, tx) =>
        {
            var connection = (NpgsqlConnection)c;
            var transaction = (NpgsqlTransaction)tx;
            // As in the batch: a missing host fails its token's foreign key (a PostgresException, so
            // the batcher retries the others alone) and rolls back the whole transaction.
            foreach (var a in attestations)
            {
                foreach (var (sql, bind) in AttestationStatements(a))
                {
                    await using var cmd = new NpgsqlCommand(sql, connection, transaction);
                    bind(cmd);
                    await cmd.ExecuteNonQueryAsync(CancellationToken.None);
                }
            }
            // Under READ COMMITTED, the read after the lock sees the previous holder's committed records.
            var (seq, hash) = await StoreSql.ReadAuditHeadAsync(c, tx, CancellationToken.None);
            var records = StoreSql.ChainAudit(seq, hash, entries);
            await using var insert = new NpgsqlCommand(InsertAuditSql, connection, transaction);
            BindAudit(insert.Parameters, records);
            await insert.ExecuteNonQueryAsync(CancellationToken.None);
            return records;
        }, CancellationToken.None);
        _auditHead = (appended[^1].Seq, appended[^1].Hash);
        return appended;
    }

    /// <summary>A statement of the shared SQL as a batch command (the shared binders write to a command; their parameters move).</summary>
    private static NpgsqlBatchCommand BatchCommand(string sql, Action<System.Data.Common.DbCommand> bind)
    {
        using var staging = new NpgsqlCommand();
        bind(staging);
        var command = new NpgsqlBatchCommand(sql);
        foreach (var p in staging.Parameters.ToArray())
        {
            staging.Parameters.Remove(p);
            command.Parameters.Add(p);
        }
        return command;
    }

    private const string AdvisoryLockSql = "SELECT pg_advisory_xact_lock(@key)";

    private const string InsertAuditSql =
        "INSERT INTO audit_log (seq, at, kind, subject, data_json, prev_hash, hash) " +
        "SELECT * FROM unnest(@seq, @at, @kind, @subject, @data, @prev, @hash)";

    private static void BindAudit(NpgsqlParameterCollection p, AuditRecord[] records)
    {
        p.Add(new NpgsqlParameter("seq", NpgsqlDbType.Array | NpgsqlDbType.Bigint) { Value = records.Select(r => r.Seq).ToArray() });
        p.Add(new NpgsqlParameter("at", NpgsqlDbType.Array | NpgsqlDbType.Bigint) { Value = records.Select(r => StoreSql.Ms(r.At)).ToArray() });
        p.Add(new NpgsqlParameter("kind", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = records.Select(r => r.Kind).ToArray() });
        p.Add(new NpgsqlParameter("subject", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = records.Select(r => r.Subject).ToArray() });
        p.Add(new NpgsqlParameter("data", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = records.Select(r => r.DataJson).ToArray() });
        p.Add(new NpgsqlParameter("prev", NpgsqlDbType.Array | NpgsqlDbType.Bytea) { Value = records.Select(r => r.PrevHash).ToArray() });
        p.Add(new NpgsqlParameter("hash", NpgsqlDbType.Array | NpgsqlDbType.Bytea) { Value = records.Select(r => r.Hash).ToArray() });
    }

    public override async ValueTask DisposeAsync()
    {
        await _audit.DisposeAsync();
        await _dataSource.DisposeAsync();
    }

    /// <summary>Runs <paramref name="work"/> in a transaction that first takes the advisory lock <paramref name="lockKey"/>.</summary>
    private async Task<T> InTransactionAsync<T>(long lockKey, Func<DbConnection, DbTransaction, Task<T>> work, CancellationToken ct)
    {
        await using var c = await _dataSource.OpenConnectionAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        await using (var lockCmd = new NpgsqlCommand(AdvisoryLockSql, c, tx))
        {
            lockCmd.Parameters.AddWithValue("key", lockKey);
            await lockCmd.ExecuteNonQueryAsync(ct);
        }
        var result = await work(c, tx);
        await tx.CommitAsync(ct);
        return result;
    }

    protected override async Task<int> ExecuteAsync(string sql, Action<DbCommand> bind, CancellationToken ct)
    {
        await using var cmd = _dataSource.CreateCommand(sql);
        bind(cmd);
        return await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>
    /// One <see cref="NpgsqlBatch"/>: one round trip, and without an explicit transaction PostgreSQL
    /// runs the batch as one implicit transaction — an error in any statement rolls back them all.
    /// </summary>
    protected override async Task<IReadOnlyList<int>> ExecuteAtomicallyAsync(IReadOnlyList<(string Sql, Action<DbCommand> Bind)> statements, CancellationToken ct)
    {
        await using var batch = _dataSource.CreateBatch();
        foreach (var (sql, bind) in statements)
        {
            batch.BatchCommands.Add(BatchCommand(sql, bind));
        }
        await batch.ExecuteNonQueryAsync(ct);
        var counts = new int[batch.BatchCommands.Count];
        for (int i = 0; i < counts.Length; i++)
        {
            counts[i] = batch.BatchCommands[i].RecordsAffected;
        }
        return counts;
    }

    protected override async Task<T?> QuerySingleAsync<T>(string sql, Action<DbCommand> bind, Func<DbDataReader, T> read, CancellationToken ct)
        where T : class
    {
        await using var cmd = _dataSource.CreateCommand(sql);
        bind(cmd);
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        return await reader.ReadAsync(ct) ? read(reader) : null;
    }

    protected override async Task<IReadOnlyList<T>> QueryAsync<T>(string sql, Action<DbCommand> bind, Func<DbDataReader, T> read, CancellationToken ct)
    {
        await using var cmd = _dataSource.CreateCommand(sql);
        bind(cmd);
        return await StoreSql.ReadAllAsync(cmd, read, ct);
    }
}

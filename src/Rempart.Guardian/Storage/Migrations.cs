using System.Data.Common;

namespace Rempart.Guardian.Storage;

/// <summary>The SQL dialects the Guardian's store speaks.</summary>
public enum SqlDialect
{
    Sqlite,
    Postgres,
}

/// <summary>
/// One versioned schema step. Its statements are portable SQL: <c>TEXT</c>, <c>BIGINT</c>, and
/// <c>{bytes}</c> for byte arrays (<c>BLOB</c> in SQLite, <c>BYTEA</c> in PostgreSQL). Every
/// timestamp is a <c>BIGINT</c> of Unix milliseconds (UTC). A step that only tunes one backend's
/// storage names it in <paramref name="Only"/>: the other backend records the version and runs nothing.
/// </summary>
public sealed record MigrationStep(int Version, string Name, IReadOnlyList<string> Statements, SqlDialect? Only = null)
{
    public IEnumerable<string> For(SqlDialect dialect) =>
        Only is { } only && only != dialect
            ? []
            : Statements.Select(s => s.Replace("{bytes}", dialect == SqlDialect.Postgres ? "BYTEA" : "BLOB", StringComparison.Ordinal));
}

/// <summary>
/// The schema, as an ordered list of steps, and how to apply it: in one transaction, each pending
/// step followed by its row in <c>schema_version</c>. The caller holds the lock that serialises
/// migrators (SQLite: <c>BEGIN IMMEDIATE</c>; PostgreSQL: an advisory transaction lock).
/// A step, once released, is never edited: changes are new steps.
/// </summary>
public static class Migrations
{
    public static IReadOnlyList<MigrationStep> Steps { get; } =
    [
        new(1, "initial schema",
        [
            """
            CREATE TABLE host_groups (
              name TEXT PRIMARY KEY,
              description TEXT NOT NULL,
              approve_ek_issuer TEXT NULL,
              policy_id TEXT NULL,
              created_at BIGINT NOT NULL)
            """,
            """
            CREATE TABLE hosts (
              id TEXT PRIMARY KEY,
              hostname TEXT NOT NULL,
              ek_public {bytes} NOT NULL,
              ek_certificate {bytes} NULL,
              ak_public {bytes} NOT NULL,
              ak_name TEXT NOT NULL UNIQUE,
              state TEXT NOT NULL,
              group_name TEXT NULL,
              enrolled_at BIGINT NOT NULL,
              last_attested_at BIGINT NULL,
              last_reset_count BIGINT NULL,
              last_restart_count BIGINT NULL,
              last_clock BIGINT NULL,
              last_status TEXT NULL)
            """,
            "CREATE INDEX hosts_enrolled_at ON hosts (enrolled_at, id)",
            """
            CREATE TABLE enrolment_challenges (
              id TEXT PRIMARY KEY,
              hostname TEXT NOT NULL,
              ek_public {bytes} NOT NULL,
              ek_certificate {bytes} NULL,
              ak_public {bytes} NOT NULL,
              secret_hash {bytes} NOT NULL,
              expires_at BIGINT NOT NULL)
            """,
            "CREATE INDEX enrolment_challenges_expires_at ON enrolment_challenges (expires_at)",
            """
            CREATE TABLE nonces (
              nonce TEXT PRIMARY KEY,
              host_id TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
              expires_at BIGINT NOT NULL)
            """,
            "CREATE INDEX nonces_expires_at ON nonces (expires_at)",
            """
            CREATE TABLE issued_tokens (
              jti TEXT PRIMARY KEY,
              host_id TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
              issued_at BIGINT NOT NULL,
              expires_at BIGINT NOT NULL,
              revoked_at BIGINT NULL)
            """,
            "CREATE INDEX issued_tokens_host_id ON issued_tokens (host_id)",
            """
            CREATE TABLE api_tokens (
              id TEXT PRIMARY KEY,
              name TEXT NOT NULL,
              role TEXT NOT NULL,
              token_hash {bytes} NOT NULL UNIQUE,
              created_at BIGINT NOT NULL)
            """,
            """
            CREATE TABLE evidence (
              host_id TEXT PRIMARY KEY REFERENCES hosts (id) ON DELETE CASCADE,
              at BIGINT NOT NULL,
              event_log {bytes} NOT NULL,
              pcrs_json TEXT NOT NULL,
              status TEXT NOT NULL)
            """,
            // seq and prev_hash unique: even a writer that skipped the lock could not fork the chain.
            """
            CREATE TABLE audit_log (
              seq BIGINT PRIMARY KEY,
              at BIGINT NOT NULL,
              kind TEXT NOT NULL,
              subject TEXT NOT NULL,
              data_json TEXT NOT NULL,
              prev_hash {bytes} NOT NULL UNIQUE,
              hash {bytes} NOT NULL UNIQUE,
              CHECK (length(prev_hash) = 32 AND length(hash) = 32))
            """,
        ]),
        new(2, "policies",
        [
            """
            CREATE TABLE policies (
              id TEXT NOT NULL,
              version BIGINT NOT NULL,
              mode TEXT NOT NULL,
              document TEXT NOT NULL,
              created_at BIGINT NOT NULL,
              PRIMARY KEY (id, version))
            """,
        ]),
        new(3, "evidence keeps its quote",
        [
            "ALTER TABLE evidence ADD COLUMN quote {bytes} NULL",
            "ALTER TABLE evidence ADD COLUMN quote_signature {bytes} NULL",
            "ALTER TABLE evidence ADD COLUMN nonce {bytes} NULL",
        ]),
        new(5, "EK allow list for TPMs without EK certificate",
        [
            """
            CREATE TABLE ek_allowlist (
              ek_name TEXT PRIMARY KEY,
              ek_public {bytes} NOT NULL,
              comment TEXT NOT NULL,
              allowed_at BIGINT NOT NULL)
            """,
        ]),
        // A host sends the same event log and PCR values at every attestation, and the evidence upsert
        // compares them with the stored ones to keep the stored copy (StoreSql.SaveEvidence): with pglz,
        // PostgreSQL's default, decompressing the stored 14 kB of a 24 kB log took ~65 µs of each
        // attestation, lz4 ~5 µs (and a changed log compresses in ~0.2 ms instead of ~0.9 ms). Values
        // already stored keep pglz until replaced; both read back the same. A server built without lz4
        // (or older than PostgreSQL 14) keeps pglz: the step then changes nothing.
        new(6, "evidence compressed with lz4 (PostgreSQL)",
        [
            """
            DO $$
            BEGIN
              EXECUTE 'ALTER TABLE evidence ALTER COLUMN event_log SET COMPRESSION lz4, ALTER COLUMN pcrs_json SET COMPRESSION lz4';
            EXCEPTION WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN
              NULL;
            END
            $$
            """,
        ], Only: SqlDialect.Postgres),
    ];

    public static int Latest => Steps[^1].Version;

    internal const string VersionTable =
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

    /// <summary>
    /// Applies the pending steps inside <paramref name="tx"/>, which the caller opened holding the
    /// migration lock and commits. Fails closed on a schema newer than this code knows.
    /// </summary>
    internal static async Task ApplyAsync(DbConnection connection, DbTransaction tx, SqlDialect dialect, CancellationToken ct)
    {
        await ExecuteAsync(connection, tx, VersionTable, ct);
        var current = await CurrentAsync(connection, tx, ct);
        if (current > Latest)
        {
            throw new InvalidOperationException(
                $"the database schema is at version {current}, newer than this Guardian knows ({Latest}): upgrade the Guardian");
        }
        foreach (var step in Steps.Where(s => s.Version > current))
        {
            foreach (var sql in step.For(dialect))
            {
                await ExecuteAsync(connection, tx, sql, ct);
            }
            await using var mark = connection.CreateCommand();
            mark.Transaction = tx;
            mark.CommandText = "INSERT INTO schema_version (version, name, applied_at) VALUES (@v, @n, @t)";
            Add(mark, "@v", step.Version);
            Add(mark, "@n", step.Name);
            Add(mark, "@t", DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
            await mark.ExecuteNonQueryAsync(ct);
        }
    }

    /// <summary>The highest applied version, 0 when none (the table must exist).</summary>
    internal static async Task<int> CurrentAsync(DbConnection connection, DbTransaction? tx, CancellationToken ct)
    {
        await using var cmd = connection.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = "SELECT COALESCE(MAX(version), 0) FROM schema_version";
        return Convert.ToInt32(await cmd.ExecuteScalarAsync(ct), System.Globalization.CultureInfo.InvariantCulture);
    }

    private static async Task ExecuteAsync(DbConnection connection, DbTransaction tx, string sql, CancellationToken ct)
    {
        await using var cmd = connection.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = sql;
        await cmd.ExecuteNonQueryAsync(ct);
    }

    private static void Add(DbCommand cmd, string name, object value)
    {
        var p = cmd.CreateParameter();
        p.ParameterName = name;
        p.Value = value;
        cmd.Parameters.Add(p);
    }
}

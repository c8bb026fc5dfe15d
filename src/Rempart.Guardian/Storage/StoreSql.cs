using System.Data.Common;

namespace Rempart.Guardian.Storage;

/// <summary>
/// The statements and row mappings both backends share (the SQL is portable: <c>@name</c>
/// parameters, <c>RETURNING</c>, <c>ON CONFLICT … DO UPDATE</c>). Keeping one copy means the
/// security-relevant statements — single-use challenges and nonces, token revocation, the audit
/// chain — cannot drift apart between SQLite and PostgreSQL. Timestamps are Unix milliseconds;
/// a <see cref="ulong"/> is stored in a <c>BIGINT</c> bit for bit (values above
/// <see cref="long.MaxValue"/> read back exactly, but sort as negative).
/// "Unexpired" means <c>expires_at &gt; now</c>: at its expiry instant a nonce or challenge is dead.
/// </summary>
internal static class StoreSql
{
    private const string HostColumns =
        "id, hostname, ek_public, ek_certificate, ak_public, ak_name, state, group_name, enrolled_at, " +
        "last_attested_at, last_reset_count, last_restart_count, last_clock, last_status";

    public const string SelectHost = "SELECT " + HostColumns + " FROM hosts";

    /// <summary>The host columns <see cref="ReadHost"/> reads (its first <see cref="HostColumnCount"/>), for a select that adds more.</summary>
    public const string SelectHostColumns = "SELECT " + HostColumns;

    public const int HostColumnCount = 14;

    /// <summary>
    /// The host (<see cref="HostColumnCount"/> columns), its group's policy id and that policy's
    /// latest version (<see cref="ReadAttestationStart"/>), for the start of an attestation; a
    /// statement may add columns after these.
    /// </summary>
    public const string SelectHostForAttestation =
        SelectHostColumns + ", g.policy_id, (SELECT max(p.version) FROM policies p WHERE p.id = g.policy_id)";

    /// <summary>What follows <see cref="SelectHostForAttestation"/> and the statement's own columns.</summary>
    public const string FromHostForAttestation = " FROM hosts LEFT JOIN host_groups g ON g.name = hosts.group_name WHERE hosts.id = @host";

    /// <summary>The host and its policy reference of a <see cref="SelectHostForAttestation"/> row.</summary>
    public static (HostRecord Host, string? PolicyId, int? PolicyVersion) ReadAttestationStart(DbDataReader r) =>
        (ReadHost(r), NullableString(r, HostColumnCount), r.IsDBNull(HostColumnCount + 1) ? null : checked((int)r.GetInt64(HostColumnCount + 1)));

    public const string InsertHost =
        "INSERT INTO hosts (" + HostColumns + ") VALUES (@id, @hostname, @ek_public, @ek_certificate, @ak_public, @ak_name, " +
        "@state, @group_name, @enrolled_at, @last_attested_at, @last_reset_count, @last_restart_count, @last_clock, @last_status)";

    public const string UpdateHost =
        "UPDATE hosts SET hostname = @hostname, ek_public = @ek_public, ek_certificate = @ek_certificate, ak_public = @ak_public, " +
        "ak_name = @ak_name, state = @state, group_name = @group_name, enrolled_at = @enrolled_at, last_attested_at = @last_attested_at, " +
        "last_reset_count = @last_reset_count, last_restart_count = @last_restart_count, last_clock = @last_clock, " +
        "last_status = @last_status WHERE id = @id";

    /// <summary>
    /// What an attestation changes in its host's row: the state and the last attestation's fields.
    /// The rest (names, keys, group) is the enrolment's and the admin's: an attestation neither sends
    /// it again nor writes back the copy it read at its start over an admin's change made meanwhile.
    /// </summary>
    public const string UpdateHostAttestation =
        "UPDATE hosts SET state = @state, last_attested_at = @last_attested_at, last_reset_count = @last_reset_count, " +
        "last_restart_count = @last_restart_count, last_clock = @last_clock, last_status = @last_status WHERE id = @id";

    public static void BindHostAttestation(DbCommand cmd, HostRecord h)
    {
        Bind(cmd, "@id", h.Id);
        Bind(cmd, "@state", h.State);
        Bind(cmd, "@last_attested_at", h.LastAttestedAt is { } a ? Ms(a) : null);
        Bind(cmd, "@last_reset_count", (long?)h.LastResetCount);
        Bind(cmd, "@last_restart_count", (long?)h.LastRestartCount);
        Bind(cmd, "@last_clock", h.LastClock is { } clock ? unchecked((long)clock) : null);
        Bind(cmd, "@last_status", h.LastStatus);
    }

    private const string ChallengeColumns = "id, hostname, ek_public, ek_certificate, ak_public, secret_hash, expires_at";

    public const string InsertChallenge =
        "INSERT INTO enrolment_challenges (" + ChallengeColumns + ") VALUES (@id, @hostname, @ek_public, @ek_certificate, @ak_public, @secret_hash, @expires_at)";

    /// <summary>Delete-returning: of concurrent takers, exactly one gets the row; an expired row is deleted too, and not returned.</summary>
    public const string TakeChallenge = "DELETE FROM enrolment_challenges WHERE id = @id RETURNING " + ChallengeColumns;

    public const string InsertNonce = "INSERT INTO nonces (nonce, host_id, expires_at) VALUES (@nonce, @host, @expires_at)";

    /// <summary>One row deleted means this caller consumed it; another host's or an expired nonce is left alone.</summary>
    public const string ConsumeNonce = "DELETE FROM nonces WHERE nonce = @nonce AND host_id = @host AND expires_at > @now";

    /// <summary>Inserts the nonce only for a host that exists and is not removed: zero rows otherwise.</summary>
    public const string InsertNonceForHost =
        "INSERT INTO nonces (nonce, host_id, expires_at) SELECT @nonce, id, @expires_at FROM hosts WHERE id = @host AND state <> 'removed'";

    /// <summary>
    /// <see cref="ConsumeNonce"/>, only for a host that may attest (neither pending nor removed), so
    /// evidence a host may not present never uses up its nonce.
    /// </summary>
    public const string ConsumeNonceOfAttestableHost =
        ConsumeNonce + " AND EXISTS (SELECT 1 FROM hosts WHERE id = @host AND state NOT IN ('pending', 'removed'))";

    public const string PurgeExpired =
        "DELETE FROM nonces WHERE expires_at <= @now; DELETE FROM enrolment_challenges WHERE expires_at <= @now";

    public const string InsertPolicy =
        "INSERT INTO policies (id, version, mode, document, created_at) VALUES (@id, @version, @mode, @document, @created_at)";

    public const string SelectPolicy = "SELECT id, version, mode, document, created_at FROM policies";

    public const string SelectLatestPolicies =
        SelectPolicy + " p WHERE version = (SELECT MAX(version) FROM policies q WHERE q.id = p.id) ORDER BY id";

    public static void BindPolicy(DbCommand cmd, PolicyRecord p)
    {
        Bind(cmd, "@id", p.Id);
        Bind(cmd, "@version", (long)p.Version);
        Bind(cmd, "@mode", p.Mode);
        Bind(cmd, "@document", p.Document);
        Bind(cmd, "@created_at", Ms(p.CreatedAt));
    }

    public static PolicyRecord ReadPolicy(DbDataReader r) =>
        new(r.GetString(0), (int)r.GetInt64(1), r.GetString(2), r.GetString(3), Time(r, 4));

    public const string SelectGroup = "SELECT name, description, approve_ek_issuer, policy_id, created_at FROM host_groups";

    /// <summary>An update keeps the group's original creation time.</summary>
    public const string UpsertGroup =
        "INSERT INTO host_groups (name, description, approve_ek_issuer, policy_id, created_at) " +
        "VALUES (@name, @description, @approve_ek_issuer, @policy_id, @created_at) ON CONFLICT (name) DO UPDATE SET " +
        "description = excluded.description, approve_ek_issuer = excluded.approve_ek_issuer, policy_id = excluded.policy_id";

    public const string SelectToken = "SELECT jti, host_id, issued_at, expires_at, revoked_at FROM issued_tokens";

    public const string InsertToken =
        "INSERT INTO issued_tokens (jti, host_id, issued_at, expires_at, revoked_at) VALUES (@jti, @host, @issued_at, @expires_at, @revoked_at)";

    public const string RevokeHostTokens = "UPDATE issued_tokens SET revoked_at = @now WHERE host_id = @host AND revoked_at IS NULL";

    public const string SelectApiToken = "SELECT id, name, role, token_hash, created_at FROM api_tokens";

    public const string InsertApiToken =
        "INSERT INTO api_tokens (id, name, role, token_hash, created_at) VALUES (@id, @name, @role, @token_hash, @created_at)";

    public const string SelectEkAllow = "SELECT ek_name, ek_public, comment, allowed_at FROM ek_allowlist";

    public const string UpsertEkAllow =
        "INSERT INTO ek_allowlist (ek_name, ek_public, comment, allowed_at) VALUES (@ek_name, @ek_public, @comment, @allowed_at) " +
        "ON CONFLICT (ek_name) DO UPDATE SET comment = excluded.comment, allowed_at = excluded.allowed_at";

    public const string SelectEvidence = "SELECT host_id, at, event_log, pcrs_json, status, quote, quote_signature, nonce FROM evidence";

    /// <summary>
    /// One row per host, the newest: saving older evidence than the stored one changes nothing.
    /// A host sends the same event log and PCR values at every attestation until it reboots: an
    /// unchanged log or PCR set is kept as the stored value itself (PostgreSQL then reuses the
    /// TOASTed copy instead of compressing and writing the tens of kilobytes again). The value
    /// stored is the same either way.
    /// </summary>
    public const string SaveEvidence =
        "INSERT INTO evidence (host_id, at, event_log, pcrs_json, status, quote, quote_signature, nonce) " +
        "VALUES (@host, @at, @event_log, @pcrs_json, @status, @quote, @quote_signature, @nonce) " +
        "ON CONFLICT (host_id) DO UPDATE SET at = excluded.at, " +
        "event_log = CASE WHEN evidence.event_log = excluded.event_log THEN evidence.event_log ELSE excluded.event_log END, " +
        "pcrs_json = CASE WHEN evidence.pcrs_json = excluded.pcrs_json THEN evidence.pcrs_json ELSE excluded.pcrs_json END, " +
        "status = excluded.status, quote = excluded.quote, quote_signature = excluded.quote_signature, nonce = excluded.nonce " +
        "WHERE excluded.at >= evidence.at";

    public const string SelectAudit =
        "SELECT seq, at, kind, subject, data_json, prev_hash, hash FROM audit_log WHERE seq >= @from ORDER BY seq LIMIT @max";

    public static long Ms(DateTimeOffset t) => t.ToUnixTimeMilliseconds();

    public static void Bind(DbCommand cmd, string name, object? value)
    {
        var p = cmd.CreateParameter();
        p.ParameterName = name;
        p.Value = value ?? DBNull.Value;
        cmd.Parameters.Add(p);
    }

    public static void BindHost(DbCommand cmd, HostRecord h)
    {
        Bind(cmd, "@id", h.Id);
        Bind(cmd, "@hostname", h.Hostname);
        Bind(cmd, "@ek_public", h.EkPublic);
        Bind(cmd, "@ek_certificate", h.EkCertificate);
        Bind(cmd, "@ak_public", h.AkPublic);
        Bind(cmd, "@ak_name", h.AkName);
        Bind(cmd, "@state", h.State);
        Bind(cmd, "@group_name", h.Group);
        Bind(cmd, "@enrolled_at", Ms(h.EnrolledAt));
        Bind(cmd, "@last_attested_at", h.LastAttestedAt is { } a ? Ms(a) : null);
        Bind(cmd, "@last_reset_count", (long?)h.LastResetCount);
        Bind(cmd, "@last_restart_count", (long?)h.LastRestartCount);
        Bind(cmd, "@last_clock", h.LastClock is { } clock ? unchecked((long)clock) : null);
        Bind(cmd, "@last_status", h.LastStatus);
    }

    public static HostRecord ReadHost(DbDataReader r) => new(
        r.GetString(0), r.GetString(1), Bytes(r, 2), NullableBytes(r, 3), Bytes(r, 4), r.GetString(5), r.GetString(6),
        NullableString(r, 7), Time(r, 8), NullableTime(r, 9),
        r.IsDBNull(10) ? null : checked((uint)r.GetInt64(10)),
        r.IsDBNull(11) ? null : checked((uint)r.GetInt64(11)),
        r.IsDBNull(12) ? null : unchecked((ulong)r.GetInt64(12)),
        NullableString(r, 13));

    public static void BindChallenge(DbCommand cmd, EnrolmentChallengeRecord c)
    {
        Bind(cmd, "@id", c.Id);
        Bind(cmd, "@hostname", c.Hostname);
        Bind(cmd, "@ek_public", c.EkPublic);
        Bind(cmd, "@ek_certificate", c.EkCertificate);
        Bind(cmd, "@ak_public", c.AkPublic);
        Bind(cmd, "@secret_hash", c.SecretHash);
        Bind(cmd, "@expires_at", Ms(c.ExpiresAt));
    }

    public static EnrolmentChallengeRecord ReadChallenge(DbDataReader r) => new(
        r.GetString(0), r.GetString(1), Bytes(r, 2), NullableBytes(r, 3), Bytes(r, 4), Bytes(r, 5), Time(r, 6));

    public static void BindNonce(DbCommand cmd, NonceRecord n)
    {
        Bind(cmd, "@nonce", n.Nonce);
        Bind(cmd, "@host", n.HostId);
        Bind(cmd, "@expires_at", Ms(n.ExpiresAt));
    }

    public static void BindConsume(DbCommand cmd, string hostId, string nonce, DateTimeOffset now)
    {
        Bind(cmd, "@nonce", nonce);
        Bind(cmd, "@host", hostId);
        Bind(cmd, "@now", Ms(now));
    }

    public static void BindGroup(DbCommand cmd, HostGroupRecord g)
    {
        Bind(cmd, "@name", g.Name);
        Bind(cmd, "@description", g.Description);
        Bind(cmd, "@approve_ek_issuer", g.ApproveEkIssuer);
        Bind(cmd, "@policy_id", g.PolicyId);
        Bind(cmd, "@created_at", Ms(g.CreatedAt));
    }

    public static HostGroupRecord ReadGroup(DbDataReader r) =>
        new(r.GetString(0), r.GetString(1), NullableString(r, 2), NullableString(r, 3), Time(r, 4));

    public static void BindToken(DbCommand cmd, IssuedTokenRecord t)
    {
        Bind(cmd, "@jti", t.Jti);
        Bind(cmd, "@host", t.HostId);
        Bind(cmd, "@issued_at", Ms(t.IssuedAt));
        Bind(cmd, "@expires_at", Ms(t.ExpiresAt));
        Bind(cmd, "@revoked_at", t.RevokedAt is { } v ? Ms(v) : null);
    }

    public static IssuedTokenRecord ReadToken(DbDataReader r) =>
        new(r.GetString(0), r.GetString(1), Time(r, 2), Time(r, 3), NullableTime(r, 4));

    public static void BindApiToken(DbCommand cmd, ApiTokenRecord t)
    {
        Bind(cmd, "@id", t.Id);
        Bind(cmd, "@name", t.Name);
        Bind(cmd, "@role", t.Role);
        Bind(cmd, "@token_hash", t.TokenHash);
        Bind(cmd, "@created_at", Ms(t.CreatedAt));
    }

    public static ApiTokenRecord ReadApiToken(DbDataReader r) =>
        new(r.GetString(0), r.GetString(1), r.GetString(2), Bytes(r, 3), Time(r, 4));

    public static void BindEkAllow(DbCommand cmd, EkAllowRecord a)
    {
        Bind(cmd, "@ek_name", a.EkName);
        Bind(cmd, "@ek_public", a.EkPublic);
        Bind(cmd, "@comment", a.Comment);
        Bind(cmd, "@allowed_at", Ms(a.AllowedAt));
    }

    public static EkAllowRecord ReadEkAllow(DbDataReader r) => new(r.GetString(0), Bytes(r, 1), r.GetString(2), Time(r, 3));

    public static void BindEvidence(DbCommand cmd, EvidenceRecord e)
    {
        Bind(cmd, "@host", e.HostId);
        Bind(cmd, "@at", Ms(e.At));
        Bind(cmd, "@event_log", e.EventLog);
        Bind(cmd, "@pcrs_json", e.PcrsJson);
        Bind(cmd, "@status", e.Status);
        Bind(cmd, "@quote", e.Quote);
        Bind(cmd, "@quote_signature", e.QuoteSignature);
        Bind(cmd, "@nonce", e.Nonce);
    }

    public static EvidenceRecord ReadEvidence(DbDataReader r) =>
        new(r.GetString(0), Time(r, 1), Bytes(r, 2), r.GetString(3), r.GetString(4), NullableBytes(r, 5), NullableBytes(r, 6), NullableBytes(r, 7));

    public static AuditRecord ReadAudit(DbDataReader r) =>
        new(r.GetInt64(0), Time(r, 1), r.GetString(2), r.GetString(3), r.GetString(4), Bytes(r, 5), Bytes(r, 6));

    /// <summary>
    /// Appends one audit record inside <paramref name="tx"/>. The caller must already hold the
    /// lock that serialises appenders (SQLite: <c>BEGIN IMMEDIATE</c>; PostgreSQL: an advisory
    /// transaction lock taken before this read), so the last record read here is still the last
    /// at commit. The unique seq and prev_hash columns reject a fork even if it were not held.
    /// </summary>
    public static async Task<AuditRecord> AppendAuditAsync(
        DbConnection c, DbTransaction tx, string kind, string subject, string dataJson, DateTimeOffset at, CancellationToken ct) =>
        (await AppendAuditAsync(c, tx, [new AuditEntry(kind, subject, dataJson, at)], ct))[0];

    /// <summary>
    /// Appends audit records, in order, inside <paramref name="tx"/> under the same lock as the
    /// single append: one read of the last record, each new record chained to the one before it,
    /// one INSERT of all of them (at most <see cref="MaxAuditBatch"/>).
    /// </summary>
    public static async Task<IReadOnlyList<AuditRecord>> AppendAuditAsync(DbConnection c, DbTransaction tx, IReadOnlyList<AuditEntry> entries, CancellationToken ct)
    {
        var (lastSeq, prevHash) = await ReadAuditHeadAsync(c, tx, ct);
        var records = ChainAudit(lastSeq, prevHash, entries);
        await using (var insert = c.CreateCommand())
        {
            insert.Transaction = tx;
            var sql = new System.Text.StringBuilder("INSERT INTO audit_log (seq, at, kind, subject, data_json, prev_hash, hash) VALUES ");
            for (int i = 0; i < records.Length; i++)
            {
                var r = records[i];
                sql.Append(i == 0 ? "" : ", ").Append(System.Globalization.CultureInfo.InvariantCulture,
                    $"(@seq{i}, @at{i}, @kind{i}, @subject{i}, @data{i}, @prev{i}, @hash{i})");
                Bind(insert, $"@seq{i}", r.Seq);
                Bind(insert, $"@at{i}", Ms(r.At));
                Bind(insert, $"@kind{i}", r.Kind);
                Bind(insert, $"@subject{i}", r.Subject);
                Bind(insert, $"@data{i}", r.DataJson);
                Bind(insert, $"@prev{i}", r.PrevHash);
                Bind(insert, $"@hash{i}", r.Hash);
            }
            insert.CommandText = sql.ToString();
            await insert.ExecuteNonQueryAsync(ct);
        }
        return records;
    }

    /// <summary>The last record's seq and hash (0 and the genesis hash for an empty log); the caller holds the appenders' lock.</summary>
    public static async Task<(long Seq, byte[] Hash)> ReadAuditHeadAsync(DbConnection c, DbTransaction tx, CancellationToken ct)
    {
        await using var last = c.CreateCommand();
        last.Transaction = tx;
        last.CommandText = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";
        await using var reader = await last.ExecuteReaderAsync(ct);
        return await reader.ReadAsync(ct) ? (reader.GetInt64(0), Bytes(reader, 1)) : (0, AuditChain.Genesis);
    }

    /// <summary>
    /// The records <paramref name="entries"/> become when appended after the record
    /// (<paramref name="lastSeq"/>, <paramref name="prevHash"/>): consecutive seqs, each hash chained
    /// to the one before, times kept to the millisecond (what the columns hold). 1 to
    /// <see cref="MaxAuditBatch"/> entries.
    /// </summary>
    public static AuditRecord[] ChainAudit(long lastSeq, byte[] prevHash, IReadOnlyList<AuditEntry> entries)
    {
        ArgumentOutOfRangeException.ThrowIfZero(entries.Count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(entries.Count, MaxAuditBatch);
        var records = new AuditRecord[entries.Count];
        for (int i = 0; i < entries.Count; i++)
        {
            var (kind, subject, dataJson, at) = entries[i];
            ArgumentNullException.ThrowIfNull(kind);
            ArgumentNullException.ThrowIfNull(subject);
            ArgumentNullException.ThrowIfNull(dataJson);
            var seq = lastSeq + 1 + i;
            var when = DateTimeOffset.FromUnixTimeMilliseconds(Ms(at));
            var hash = AuditChain.ComputeHash(prevHash, seq, when, kind, subject, dataJson);
            records[i] = new AuditRecord(seq, when, kind, subject, dataJson, prevHash, hash);
            prevHash = hash;
        }
        return records;
    }

    /// <summary>The most records one INSERT appends (7 parameters each, well under both backends' limits).</summary>
    public const int MaxAuditBatch = 128;

    public static async Task<IReadOnlyList<T>> ReadAllAsync<T>(DbCommand cmd, Func<DbDataReader, T> read, CancellationToken ct)
    {
        var rows = new List<T>();
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            rows.Add(read(reader));
        }
        return rows;
    }

    private static byte[] Bytes(DbDataReader r, int i) => r.GetFieldValue<byte[]>(i);

    private static byte[]? NullableBytes(DbDataReader r, int i) => r.IsDBNull(i) ? null : r.GetFieldValue<byte[]>(i);

    private static string? NullableString(DbDataReader r, int i) => r.IsDBNull(i) ? null : r.GetString(i);

    private static DateTimeOffset Time(DbDataReader r, int i) => DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(i));

    private static DateTimeOffset? NullableTime(DbDataReader r, int i) => r.IsDBNull(i) ? null : Time(r, i);
}

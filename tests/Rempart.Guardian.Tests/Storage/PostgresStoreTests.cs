using System.Globalization;
using Npgsql;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Tests.Storage;

/// <summary>
/// The store contract on PostgreSQL: each database is a fresh schema (the store's
/// <c>search_path</c>) in the test server, dropped afterwards.
/// </summary>
public sealed class PostgresStoreTests : StoreContractTests
{
    private string _server = "";

    protected override async Task<string> CreateDatabaseAsync()
    {
        _server = await TestPostgres.ConnectionStringAsync();
        var schema = $"rempart_test_{Guid.NewGuid():N}";
        await ExecuteAsync(_server, $"CREATE SCHEMA {schema}");
        return schema;
    }

    protected override IGuardianStore OpenStore(string database) => new PostgresGuardianStore(InSchema(database));

    protected override Task ExecuteSqlAsync(string database, string sql) => ExecuteAsync(InSchema(database, pooling: false), sql);

    protected override async Task<long> ScalarAsync(string database, string sql)
    {
        await using var c = new NpgsqlConnection(InSchema(database, pooling: false));
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, c);
        return Convert.ToInt64(await cmd.ExecuteScalarAsync(), CultureInfo.InvariantCulture);
    }

    protected override Task DropDatabaseAsync(string database) => ExecuteAsync(_server, $"DROP SCHEMA IF EXISTS {database} CASCADE");

    [Fact]
    public async Task Byte_arrays_are_bytea()
    {
        await using var c = new NpgsqlConnection(InSchema(Database, pooling: false));
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND data_type = 'bytea'", c);
        // 11 in schema 1, plus evidence.quote, quote_signature and nonce (schema 3), ek_allowlist.ek_public (schema 5).
        Assert.Equal(15L, await cmd.ExecuteScalarAsync());
    }

    [Fact]
    public async Task Evidence_logs_and_pcr_values_are_compressed_with_lz4()
    {
        await using var c = new NpgsqlConnection(InSchema(Database, pooling: false));
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'evidence'::regclass AND attname IN ('event_log', 'pcrs_json') AND attcompression = 'l'", c);
        Assert.Equal(2L, await cmd.ExecuteScalarAsync());
    }

    /// <summary>The server, in a schema; the tests' own connections are unpooled so that no idle ones pile up.</summary>
    private string InSchema(string schema, bool pooling = true) =>
        new NpgsqlConnectionStringBuilder(_server) { SearchPath = schema, Pooling = pooling }.ConnectionString;

    private static async Task ExecuteAsync(string cs, string sql)
    {
        await using var c = new NpgsqlConnection(cs);
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, c);
        await cmd.ExecuteNonQueryAsync();
    }
}

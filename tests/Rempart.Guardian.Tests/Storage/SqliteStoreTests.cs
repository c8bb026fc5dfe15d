using System.Globalization;
using Microsoft.Data.Sqlite;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Tests.Storage;

/// <summary>The store contract on SQLite: each database is a fresh temporary folder.</summary>
public sealed class SqliteStoreTests : StoreContractTests
{
    protected override Task<string> CreateDatabaseAsync() =>
        Task.FromResult(Directory.CreateTempSubdirectory("rempart-store-").FullName);

    protected override IGuardianStore OpenStore(string database) => new SqliteGuardianStore(database);

    protected override async Task ExecuteSqlAsync(string database, string sql)
    {
        await using var c = await OpenAsync(database);
        await using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        await cmd.ExecuteNonQueryAsync();
    }

    protected override async Task<long> ScalarAsync(string database, string sql)
    {
        await using var c = await OpenAsync(database);
        await using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        return Convert.ToInt64(await cmd.ExecuteScalarAsync(), CultureInfo.InvariantCulture);
    }

    protected override Task DropDatabaseAsync(string database)
    {
        Directory.Delete(database, recursive: true);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task Database_is_a_wal_file_in_the_data_folder()
    {
        Assert.True(File.Exists(Path.Combine(Database, SqliteGuardianStore.FileName)));
        await using var c = await OpenAsync(Database);
        await using var cmd = c.CreateCommand();
        cmd.CommandText = "PRAGMA journal_mode";
        Assert.Equal("wal", await cmd.ExecuteScalarAsync());
    }

    /// <summary>An unpooled connection, so the folder can be deleted afterwards.</summary>
    private static async Task<SqliteConnection> OpenAsync(string database)
    {
        var c = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = Path.Combine(database, SqliteGuardianStore.FileName),
            Mode = SqliteOpenMode.ReadWrite,
            Pooling = false,
        }.ToString());
        await c.OpenAsync();
        return c;
    }
}

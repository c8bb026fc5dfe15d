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

    [Fact]
    public async Task Writes_that_share_a_commit_fail_alone_and_the_others_are_stored()
    {
        // Queued together, these run in one transaction (group commit), each in its own savepoint.
        await Store.InsertHostAsync(NewHost("h1"));
        var writes = Enumerable.Range(0, 60).Select(i => i switch
        {
            17 => Store.InsertNonceAsync(new NonceRecord("n-orphan", "no-such-host", T0.AddMinutes(5))), // foreign key
            33 => Store.InsertNonceAsync(new NonceRecord("n3", "h1", T0.AddMinutes(5))), // duplicate of i = 3
            _ => Store.InsertNonceAsync(new NonceRecord($"n{i}", "h1", T0.AddMinutes(5))),
        }).ToList();
        var outcome = await Task.WhenAll(writes.Select(async w =>
        {
            try
            {
                await w;
                return true;
            }
            catch (SqliteException)
            {
                return false;
            }
        }));
        // Writes run in the order they were queued: the first n3 wins, the second fails.
        Assert.Equal(Enumerable.Range(0, 60).Select(i => i is not (17 or 33)), outcome);
        foreach (var i in Enumerable.Range(0, 60).Where(i => i is not (17 or 33)))
        {
            Assert.True(await Store.ConsumeNonceAsync("h1", $"n{i}", T0), $"nonce n{i} was not stored");
        }
        Assert.Equal(0, await ScalarAsync(Database, "SELECT count(*) FROM nonces"));
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

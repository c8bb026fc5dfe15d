using System.Text.Json;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Tests.Storage;

/// <summary>
/// The contract every <see cref="IGuardianStore"/> backend meets, run once per backend by a
/// subclass. Each test gets a fresh, migrated database (a folder, a schema) of its own.
/// This file: the schema and migrations. The other parts: round trips, single use, audit chain,
/// concurrency.
/// </summary>
public abstract partial class StoreContractTests : IAsyncLifetime
{
    /// <summary>2026-01-01. A property, not a field: field initialisers in the partial files run in no defined order.</summary>
    protected static DateTimeOffset T0 => DateTimeOffset.FromUnixTimeMilliseconds(1_767_225_600_000);

    private readonly List<IGuardianStore> _stores = [];
    private readonly List<string> _databases = [];

    /// <summary>The test's store, on its migrated database.</summary>
    protected IGuardianStore Store { get; private set; } = null!;

    /// <summary>The test's database (what <see cref="OpenStore"/> takes).</summary>
    protected string Database { get; private set; } = "";

    /// <summary>Creates an empty database and returns its name for <see cref="OpenStore"/>.</summary>
    protected abstract Task<string> CreateDatabaseAsync();

    /// <summary>A new store instance (a replica, or another process's view) on a database.</summary>
    protected abstract IGuardianStore OpenStore(string database);

    /// <summary>Runs SQL on a database directly, behind the store's back (a tampering insider).</summary>
    protected abstract Task ExecuteSqlAsync(string database, string sql);

    protected abstract Task<long> ScalarAsync(string database, string sql);

    protected abstract Task DropDatabaseAsync(string database);

    public async Task InitializeAsync()
    {
        Database = await NewDatabaseAsync();
        Store = Track(OpenStore(Database));
        await Store.MigrateAsync();
    }

    public async Task DisposeAsync()
    {
        foreach (var store in _stores)
        {
            await store.DisposeAsync();
        }
        foreach (var database in _databases)
        {
            await DropDatabaseAsync(database);
        }
    }

    protected async Task<string> NewDatabaseAsync()
    {
        var database = await CreateDatabaseAsync();
        _databases.Add(database);
        return database;
    }

    protected IGuardianStore Track(IGuardianStore store)
    {
        _stores.Add(store);
        return store;
    }

    /// <summary>Records compare by their JSON (byte arrays as base64): records hold arrays, which compare by reference.</summary>
    protected static string Json(object? value) => JsonSerializer.Serialize(value);

    [Fact]
    public async Task Migrate_brings_a_new_database_to_the_latest_version()
    {
        var fresh = Track(OpenStore(await NewDatabaseAsync()));
        Assert.Equal(0, await fresh.SchemaVersionAsync());
        await fresh.MigrateAsync();
        Assert.Equal(Migrations.Latest, await fresh.SchemaVersionAsync());
    }

    [Fact]
    public async Task Migrate_twice_is_a_no_op()
    {
        await Store.InsertHostAsync(NewHost("h1"));
        await Store.MigrateAsync();
        Assert.Equal(Migrations.Latest, await Store.SchemaVersionAsync());
        Assert.Equal(Migrations.Steps.Count, await ScalarAsync(Database, "SELECT count(*) FROM schema_version"));
        Assert.NotNull(await Store.GetHostAsync("h1"));
    }

    [Fact]
    public async Task Concurrent_migrations_apply_each_step_once()
    {
        for (var round = 0; round < 3; round++)
        {
            var database = await NewDatabaseAsync();
            var stores = Enumerable.Range(0, 4).Select(_ => Track(OpenStore(database))).ToArray();
            await Concurrently(stores.Length, async i => { await stores[i].MigrateAsync(); return 0; });
            Assert.Equal(Migrations.Latest, await stores[0].SchemaVersionAsync());
            Assert.Equal(Migrations.Steps.Count, await ScalarAsync(database, "SELECT count(*) FROM schema_version"));
        }
    }

    [Fact]
    public async Task Migrate_refuses_a_schema_newer_than_it_knows()
    {
        await ExecuteSqlAsync(Database, $"INSERT INTO schema_version (version, name, applied_at) VALUES ({Migrations.Latest + 1}, 'future', 0)");
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => Store.MigrateAsync());
        Assert.Contains("newer than this Guardian knows", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Foreign_keys_are_enforced()
    {
        await Assert.ThrowsAnyAsync<System.Data.Common.DbException>(
            () => Store.InsertNonceAsync(new NonceRecord("n1", "no-such-host", T0.AddMinutes(1))));
    }

    [Fact]
    public async Task Byte_arrays_are_stored_as_blobs_not_text()
    {
        await Store.InsertHostAsync(NewHost("h1"));
        Assert.Equal(64, await ScalarAsync(Database, "SELECT length(ek_public) FROM hosts WHERE id = 'h1'"));
    }

    /// <summary>
    /// Starts <paramref name="n"/> calls at once, each on a thread of its own released by one
    /// barrier, and waits for them all. Own threads, not the pool: Microsoft.Data.Sqlite's async
    /// methods run synchronously, so on a small pool the calls would mostly take turns.
    /// </summary>
    protected static async Task<T[]> Concurrently<T>(int n, Func<int, Task<T>> work)
    {
        using var barrier = new Barrier(n);
        var tasks = Enumerable.Range(0, n).Select(i => Task.Factory.StartNew(
            () =>
            {
                barrier.SignalAndWait();
                return work(i);
            },
            CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap()).ToArray();
        return await Task.WhenAll(tasks);
    }

    protected static byte[] Bytes(byte seed, int length) => Enumerable.Range(0, length).Select(i => (byte)(seed + i)).ToArray();

    protected static HostRecord NewHost(string id, DateTimeOffset? enrolledAt = null) => new(
        id, $"{id}.example", Bytes(1, 64), null, Bytes(2, 64), $"000b{id}", HostStates.Pending, null,
        enrolledAt ?? T0, null, null, null, null, null);
}

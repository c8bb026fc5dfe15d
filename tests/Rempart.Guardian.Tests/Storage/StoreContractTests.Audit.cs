using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Tests.Storage;

/// <summary>The audit log is a hash chain from genesis; a change or a deletion made in SQL is found.</summary>
public abstract partial class StoreContractTests
{
    [Fact]
    public async Task Audit_records_chain_from_genesis_and_read_back_unchanged()
    {
        var first = await Store.AppendAuditAsync("host.enrolled", "h1", """{"ek":"abc"}""", T0);
        var second = await Store.AppendAuditAsync("host.approved", "h1", "{}", T0.AddSeconds(1));
        var third = await Store.AppendAuditAsync("key.released", "vm-é✓", """{"n":1}""", T0.AddSeconds(2));

        Assert.Equal(1, first.Seq);
        Assert.Equal(new byte[32], first.PrevHash);
        Assert.Equal(AuditChain.ComputeHash(new byte[32], 1, T0, "host.enrolled", "h1", """{"ek":"abc"}"""), first.Hash);
        Assert.Equal(first.Hash, second.PrevHash);
        Assert.Equal(second.Hash, third.PrevHash);

        var all = await Store.ReadAuditAsync(1, 100);
        Assert.Equal(Json(new[] { first, second, third }), Json(all));
        Assert.Equal((true, (long?)null), AuditChain.Verify(all));
    }

    [Fact]
    public async Task Audit_time_is_kept_to_the_millisecond_and_still_verifies()
    {
        var appended = await Store.AppendAuditAsync("k", "s", "{}", T0.AddTicks(12_345));
        Assert.Equal(T0.AddMilliseconds(1), appended.At);
        var read = await Store.ReadAuditAsync(1, 10);
        Assert.Equal(Json(new[] { appended }), Json(read));
        Assert.True(AuditChain.Verify(read).Ok);
    }

    [Fact]
    public async Task Audit_is_read_in_pages()
    {
        for (var i = 0; i < 7; i++)
        {
            await Store.AppendAuditAsync("k", $"s{i}", "{}", T0.AddSeconds(i));
        }
        Assert.Equal([3L, 4L, 5L], (await Store.ReadAuditAsync(3, 3)).Select(r => r.Seq));
        Assert.Equal([7L], (await Store.ReadAuditAsync(7, 3)).Select(r => r.Seq));
        Assert.Empty(await Store.ReadAuditAsync(8, 3));
        Assert.Empty(await Store.ReadAuditAsync(1, 0));
        var page = await Store.ReadAuditAsync(4, 4);
        var before = (await Store.ReadAuditAsync(3, 1))[0];
        Assert.True(AuditChain.Verify(page, 4, before.Hash).Ok);
    }

    [Fact]
    public async Task Replicas_taking_turns_extend_one_chain()
    {
        // Each store appends after the other did: a head a store remembers from its own last append is stale by then.
        IGuardianStore[] stores = [Store, Track(OpenStore(Database))];
        var appended = new List<AuditRecord>();
        for (var i = 0; i < 6; i++)
        {
            appended.Add(await stores[i % 2].AppendAuditAsync("host.attested", $"h{i}", "{}", T0.AddSeconds(i)));
        }
        Assert.Equal([1L, 2L, 3L, 4L, 5L, 6L], appended.Select(r => r.Seq));
        var all = await Store.ReadAuditAsync(1, 100);
        Assert.Equal(Json(appended), Json(all));
        Assert.Equal((true, (long?)null), AuditChain.Verify(all));
    }

    [Theory]
    [InlineData("data changed", "UPDATE audit_log SET data_json = '{\"tampered\":true}' WHERE seq = 3", 3)]
    [InlineData("kind changed", "UPDATE audit_log SET kind = 'nothing.happened' WHERE seq = 3", 3)]
    [InlineData("subject changed", "UPDATE audit_log SET subject = 'h2' WHERE seq = 3", 3)]
    [InlineData("time changed", "UPDATE audit_log SET at = at + 1 WHERE seq = 3", 3)]
    [InlineData("last record changed", "UPDATE audit_log SET data_json = '{}' WHERE seq = 5", 5)]
    [InlineData("middle record deleted", "DELETE FROM audit_log WHERE seq = 3", 3)]
    [InlineData("first record deleted", "DELETE FROM audit_log WHERE seq = 1", 1)]
    public async Task Tampering_in_sql_is_found(string name, string sql, long firstBadSeq)
    {
        _ = name; // labels the case in the test output
        for (var i = 1; i <= 5; i++)
        {
            await Store.AppendAuditAsync("host.attested", $"h{i}", $$"""{"i":{{i}}}""", T0.AddSeconds(i));
        }
        Assert.True(AuditChain.Verify(await Store.ReadAuditAsync(1, 100)).Ok);
        await ExecuteSqlAsync(Database, sql);
        Assert.Equal((false, (long?)firstBadSeq), AuditChain.Verify(await Store.ReadAuditAsync(1, 100)));
    }
}

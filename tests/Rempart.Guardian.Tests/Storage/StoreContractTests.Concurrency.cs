using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Tests.Storage;

/// <summary>
/// 50 callers at once, spread over two store instances on one database (two replicas, or two
/// processes): single use holds, and the audit chain never forks.
/// </summary>
public abstract partial class StoreContractTests
{
    private const int Callers = 50;

    /// <summary>The test's store and a second instance on the same database.</summary>
    private IGuardianStore[] Replicas() => [Store, Track(OpenStore(Database))];

    /// <summary>Races are probabilistic: each single-use race is run this many times, on warm connections after the first.</summary>
    private const int Rounds = 5;

    [Fact]
    public async Task Of_concurrent_challenge_takers_exactly_one_wins()
    {
        var stores = Replicas();
        for (var round = 0; round < Rounds; round++)
        {
            var challenge = new EnrolmentChallengeRecord($"c{round}", "h1", Bytes(1, 8), null, Bytes(2, 8), Bytes(3, 32), T0.AddMinutes(5));
            await Store.InsertChallengeAsync(challenge);
            var taken = await Concurrently(Callers, i => stores[i % 2].TakeChallengeAsync(challenge.Id, T0));
            Assert.Equal(Json(challenge), Json(Assert.Single(taken, t => t is not null)));
        }
    }

    [Fact]
    public async Task Of_concurrent_nonce_consumers_exactly_one_wins()
    {
        await Store.InsertHostAsync(NewHost("h1"));
        var stores = Replicas();
        for (var round = 0; round < Rounds; round++)
        {
            await Store.InsertNonceAsync(new NonceRecord($"n{round}", "h1", T0.AddMinutes(5)));
            var consumed = await Concurrently(Callers, i => stores[i % 2].ConsumeNonceAsync("h1", $"n{round}", T0));
            Assert.Single(consumed, c => c);
        }
    }

    [Fact]
    public async Task Concurrent_audit_appends_form_one_unbroken_chain()
    {
        var stores = Replicas();
        var appended = await Concurrently(Callers, i => stores[i % 2].AppendAuditAsync("host.attested", $"h{i}", "{}", T0.AddMilliseconds(i)));
        var all = await Store.ReadAuditAsync(1, 1000);
        Assert.Equal(Enumerable.Range(1, Callers).Select(i => (long)i), all.Select(r => r.Seq));
        Assert.Equal((true, (long?)null), AuditChain.Verify(all));
        Assert.Equal(Json(appended.OrderBy(r => r.Seq)), Json(all));
    }

    [Fact]
    public async Task Concurrent_attestations_all_complete()
    {
        var stores = Replicas();
        for (var i = 0; i < Callers; i++)
        {
            await Store.InsertHostAsync(NewHost($"h{i}", T0.AddMilliseconds(i)));
            await Store.InsertNonceAsync(new NonceRecord($"n{i}", $"h{i}", T0.AddMinutes(5)));
            await Store.InsertTokenAsync(new IssuedTokenRecord($"old{i}", $"h{i}", T0, T0.AddHours(1), null));
        }
        var now = T0.AddSeconds(10);
        var results = await Concurrently(Callers, async i =>
        {
            var store = stores[i % 2];
            var host = $"h{i}";
            if (!await store.ConsumeNonceAsync(host, $"n{i}", now))
            {
                return false;
            }
            var record = (await store.GetHostAsync(host))!;
            await store.UpdateHostAsync(record with { State = HostStates.Healthy, LastAttestedAt = now, LastClock = (ulong)i });
            await store.SaveEvidenceAsync(new EvidenceRecord(host, now, Bytes((byte)i, 4096), "{}", "ok"));
            await store.RevokeHostTokensAsync(host, now);
            await store.InsertTokenAsync(new IssuedTokenRecord($"new{i}", host, now, now.AddHours(1), null));
            await store.AppendAuditAsync("host.attested", host, "{}", now);
            return true;
        });

        Assert.All(results, Assert.True);
        var hosts = await Store.ListHostsAsync();
        Assert.Equal(Enumerable.Range(0, Callers).Select(i => $"h{i}"), hosts.Select(h => h.Id));
        Assert.All(hosts, h => Assert.Equal((HostStates.Healthy, now), (h.State, h.LastAttestedAt!.Value)));
        Assert.All(hosts, h => Assert.Equal($"h{h.LastClock}", h.Id));
        Assert.Equal(Callers, await ScalarAsync(Database, "SELECT count(*) FROM issued_tokens WHERE revoked_at IS NULL AND jti LIKE 'new%'"));
        Assert.Equal(Callers, await ScalarAsync(Database, "SELECT count(*) FROM issued_tokens WHERE revoked_at IS NOT NULL AND jti LIKE 'old%'"));
        Assert.Equal(Callers, await ScalarAsync(Database, "SELECT count(*) FROM evidence"));
        Assert.True(AuditChain.Verify(await Store.ReadAuditAsync(1, 1000)).Ok);
    }
}

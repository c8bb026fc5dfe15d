using System.Data.Common;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Tests.Storage;

/// <summary>What an affirmed attestation writes: the host's state, the token, the evidence — all or nothing.</summary>
public abstract partial class StoreContractTests
{
    private static (HostRecord Host, IssuedTokenRecord Token, EvidenceRecord Evidence) Affirmed(string host, int n) =>
        (NewHost(host) with { State = HostStates.Healthy, LastAttestedAt = T0.AddMinutes(n), LastResetCount = 3, LastRestartCount = 0, LastClock = 1_000UL + (ulong)n, LastStatus = "affirming" },
         new IssuedTokenRecord($"jti-{host}-{n}", host, T0.AddMinutes(n), T0.AddMinutes(n + 5), null),
         new EvidenceRecord(host, T0.AddMinutes(n), Bytes(5, 30_000), """{"sha256":{"0":"aa"}}""", "affirming", Bytes((byte)n, 145), Bytes(8, 72), Bytes((byte)(n + 1), 32)));

    [Fact]
    public async Task Recording_an_attestation_stores_host_token_and_evidence()
    {
        await Store.InsertHostAsync(NewHost("h1"));
        for (int n = 1; n <= 2; n++)
        {
            var (host, token, evidence) = Affirmed("h1", n);
            await Store.RecordAttestationAsync(host, token, evidence);
            Assert.Equal(Json(host), Json(await Store.GetHostAsync("h1")));
            Assert.Equal(Json(token), Json(await Store.GetTokenAsync(token.Jti)));
            // The same large log again (kept as stored), a new quote and nonce.
            Assert.Equal(Json(evidence), Json(await Store.GetLatestEvidenceAsync("h1")));
        }
        // After a reboot: another log and other PCR values replace the stored ones.
        var (host3, token3, evidence3) = Affirmed("h1", 3);
        var changed = evidence3 with { EventLog = Bytes(6, 30_000), PcrsJson = """{"sha256":{"0":"bb"}}""" };
        await Store.RecordAttestationAsync(host3, token3, changed);
        Assert.Equal(Json(changed), Json(await Store.GetLatestEvidenceAsync("h1")));
    }

    [Fact]
    public async Task Recording_an_attestation_changes_only_the_hosts_attestation_fields()
    {
        await Store.InsertHostAsync(NewHost("h1") with { State = HostStates.Approved, Group = "a" });
        var (host, token, evidence) = Affirmed("h1", 1);
        // An admin moves the host to another group while its attestation runs on the copy it read before.
        var read = await Store.GetHostAsync("h1");
        await Store.UpdateHostAsync(read! with { Group = "b" });
        await Store.RecordAttestationAsync(read! with
        {
            State = host.State, LastAttestedAt = host.LastAttestedAt, LastResetCount = host.LastResetCount,
            LastRestartCount = host.LastRestartCount, LastClock = host.LastClock, LastStatus = host.LastStatus,
        }, token, evidence);
        Assert.Equal(Json(host with { Group = "b" }), Json(await Store.GetHostAsync("h1")));
    }

    [Fact]
    public async Task Recording_an_attestation_of_a_host_that_no_longer_exists_stores_nothing()
    {
        var (host, token, evidence) = Affirmed("gone", 1);
        var e = await Record.ExceptionAsync(() => Store.RecordAttestationAsync(host, token, evidence));
        Assert.True(e is KeyNotFoundException or DbException, $"unexpected {e?.GetType().Name}: {e?.Message}");
        Assert.Null(await Store.GetTokenAsync(token.Jti));
        Assert.Null(await Store.GetLatestEvidenceAsync("gone"));
        await Assert.ThrowsAsync<ArgumentException>(() => Store.RecordAttestationAsync(NewHost("h1"), token, evidence));
    }

    private static AuditEntry[] AuditOf(string host, int n) =>
        [new("host.state", host, $$"""{"n":{{n}}}""", T0.AddMinutes(n)), new("attestation.affirming", host, $$"""{"jti":"jti-{{host}}-{{n}}"}""", T0.AddMinutes(n))];

    [Fact]
    public async Task Recording_an_attestation_with_its_audit_records_stores_all_of_them_chained()
    {
        await Store.InsertHostAsync(NewHost("h1"));
        var before = await Store.AppendAuditAsync("host.approved", "h1", "{}", T0);
        var (host, token, evidence) = Affirmed("h1", 1);
        var records = await Store.RecordAttestationAsync(host, token, evidence, AuditOf("h1", 1));
        Assert.Equal(Json(host), Json(await Store.GetHostAsync("h1")));
        Assert.Equal(Json(token), Json(await Store.GetTokenAsync(token.Jti)));
        Assert.Equal(Json(evidence), Json(await Store.GetLatestEvidenceAsync("h1")));
        Assert.Equal(["host.state", "attestation.affirming"], records.Select(r => r.Kind));
        Assert.Equal(before.Hash, records[0].PrevHash);
        var all = await Store.ReadAuditAsync(1, 10);
        Assert.Equal(Json(records), Json(all.Skip(1)));
        Assert.True(AuditChain.Verify(all).Ok);
    }

    [Fact]
    public async Task Recording_an_attestation_of_a_missing_host_stores_neither_it_nor_its_audit_records()
    {
        await Store.AppendAuditAsync("host.approved", "h1", "{}", T0);
        var (host, token, evidence) = Affirmed("gone", 1);
        var e = await Record.ExceptionAsync(() => Store.RecordAttestationAsync(host, token, evidence, AuditOf("gone", 1)));
        Assert.True(e is KeyNotFoundException or DbException, $"unexpected {e?.GetType().Name}: {e?.Message}");
        Assert.Null(await Store.GetTokenAsync(token.Jti));
        Assert.Null(await Store.GetLatestEvidenceAsync("gone"));
        Assert.Single(await Store.ReadAuditAsync(1, 10));
        await Assert.ThrowsAsync<ArgumentException>(() => Store.RecordAttestationAsync(NewHost("h1"), token, evidence, AuditOf("h1", 1)));
    }

    [Fact]
    public async Task Concurrent_attestations_commit_together_and_a_failing_one_fails_alone()
    {
        const int hosts = 40;
        for (int i = 0; i < hosts; i++)
        {
            await Store.InsertHostAsync(NewHost($"h{i}"));
        }
        // Every seventh attestation is of a host that does not exist: it must fail without taking its batch with it.
        var outcomes = await Concurrently(hosts, async i =>
        {
            var id = i % 7 == 3 ? $"gone{i}" : $"h{i}";
            var (host, token, evidence) = Affirmed(id, 1);
            try
            {
                return (Id: id, Records: await Store.RecordAttestationAsync(host, token, evidence, AuditOf(id, 1)));
            }
            catch (Exception e) when (e is KeyNotFoundException or DbException)
            {
                return (Id: id, Records: (IReadOnlyList<AuditRecord>?)null);
            }
        });
        foreach (var (id, records) in outcomes)
        {
            bool exists = !id.StartsWith("gone", StringComparison.Ordinal);
            Assert.Equal(exists, records is not null);
            Assert.Equal(exists, await Store.GetTokenAsync($"jti-{id}-1") is not null);
            Assert.Equal(exists, await Store.GetLatestEvidenceAsync(id) is not null);
            if (records is not null)
            {
                Assert.All(records, r => Assert.Equal(id, r.Subject));
                Assert.Equal(records[0].Seq + 1, records[1].Seq);
            }
        }
        var all = await Store.ReadAuditAsync(1, 1000);
        Assert.Equal(2 * outcomes.Count(o => o.Records is not null), all.Count);
        Assert.DoesNotContain(all, r => r.Subject.StartsWith("gone", StringComparison.Ordinal));
        Assert.True(AuditChain.Verify(all).Ok);
    }

    [Fact]
    public async Task A_nonce_is_stored_only_for_a_host_that_exists_and_is_not_removed()
    {
        await Store.InsertHostAsync(NewHost("pending"));
        await Store.InsertHostAsync(NewHost("removed") with { State = HostStates.Removed });
        Assert.True(await Store.InsertNonceForHostAsync(new NonceRecord("n1", "pending", T0.AddMinutes(1))));
        Assert.False(await Store.InsertNonceForHostAsync(new NonceRecord("n2", "removed", T0.AddMinutes(1))));
        Assert.False(await Store.InsertNonceForHostAsync(new NonceRecord("n3", "nobody", T0.AddMinutes(1))));
        Assert.Equal(1, await ScalarAsync(Database, "SELECT count(*) FROM nonces"));
    }

    [Theory]
    [InlineData(HostStates.Pending, false)]
    [InlineData(HostStates.Removed, false)]
    [InlineData(HostStates.Approved, true)]
    [InlineData(HostStates.Healthy, true)]
    [InlineData(HostStates.Failed, true)]
    [InlineData(HostStates.Stale, true)]
    public async Task Taking_a_nonce_reads_the_host_and_consumes_only_for_a_host_that_may_attest(string state, bool consumes)
    {
        await Store.InsertHostAsync(NewHost("h1") with { State = state });
        await Store.InsertHostAsync(NewHost("h2") with { State = HostStates.Healthy });
        await Store.InsertNonceAsync(new NonceRecord("n1", "h1", T0.AddMinutes(1)));
        await Store.InsertNonceAsync(new NonceRecord("n2", "h2", T0.AddMinutes(1)));

        var start = await Store.TakeNonceForAttestationAsync("h1", "n1", T0);
        Assert.Equal(Json(await Store.GetHostAsync("h1")), Json(start.Host));
        Assert.Equal(consumes, start.NonceConsumed);
        Assert.False((await Store.TakeNonceForAttestationAsync("h1", "n1", T0)).NonceConsumed);
        // Another host's nonce, an unknown host, an expired nonce: nothing consumed.
        Assert.False((await Store.TakeNonceForAttestationAsync("h1", "n2", T0)).NonceConsumed);
        Assert.Equal(new AttestationStart(null, false), await Store.TakeNonceForAttestationAsync("nobody", "n2", T0));
        Assert.False((await Store.TakeNonceForAttestationAsync("h2", "n2", T0.AddMinutes(1))).NonceConsumed);
        Assert.Equal(consumes ? 1 : 2, await ScalarAsync(Database, "SELECT count(*) FROM nonces"));
    }

    [Fact]
    public async Task Of_concurrent_attestations_with_one_nonce_exactly_one_takes_it()
    {
        await Store.InsertHostAsync(NewHost("h1") with { State = HostStates.Healthy });
        IGuardianStore[] stores = [Store, Track(OpenStore(Database))];
        for (var round = 0; round < 5; round++)
        {
            await Store.InsertNonceAsync(new NonceRecord($"n{round}", "h1", T0.AddMinutes(5)));
            var taken = await Concurrently(50, i => stores[i % 2].TakeNonceForAttestationAsync("h1", $"n{round}", T0));
            Assert.Single(taken, t => t.NonceConsumed);
            Assert.All(taken, t => Assert.Equal("h1", t.Host?.Id));
        }
    }
}

/// <summary>The policy reference read with the host at the start of an attestation.</summary>
public abstract partial class StoreContractTests
{
    public static TheoryData<string, string?, string?, int?> PolicyReferences => new()
    {
        { "no group", null, null, null },
        { "group without policy", "plain", null, null },
        { "group naming a missing policy", "orphan", "gone", null },
        { "group with a policy", "judged", "p", 2 },
    };

    [Theory]
    [MemberData(nameof(PolicyReferences))]
    public async Task Taking_a_nonce_reads_the_groups_policy_and_its_latest_version(string name, string? group, string? policyId, int? version)
    {
        _ = name; // labels the case in the test output
        await Store.UpsertGroupAsync(new HostGroupRecord("plain", "", null, null, T0));
        await Store.UpsertGroupAsync(new HostGroupRecord("orphan", "", null, "gone", T0));
        await Store.UpsertGroupAsync(new HostGroupRecord("judged", "", null, "p", T0));
        await Store.InsertPolicyAsync(new PolicyRecord("p", 1, "enforce", "{}", T0));
        await Store.InsertPolicyAsync(new PolicyRecord("p", 2, "enforce", "{}", T0));
        await Store.InsertPolicyAsync(new PolicyRecord("other", 7, "enforce", "{}", T0));
        await Store.InsertHostAsync(NewHost("h1") with { State = HostStates.Healthy, Group = group });
        await Store.InsertNonceAsync(new NonceRecord("n1", "h1", T0.AddMinutes(1)));

        var start = await Store.TakeNonceForAttestationAsync("h1", "n1", T0);
        Assert.True(start.NonceConsumed);
        Assert.Equal("h1", start.Host?.Id);
        Assert.Equal((policyId, version), (start.PolicyId, start.PolicyVersion));
    }
}

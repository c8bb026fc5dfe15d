using System.Data.Common;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Tests.Storage;

/// <summary>Every record type comes back as it went in, nulls included; lists are ordered.</summary>
public abstract partial class StoreContractTests
{
    private static readonly Dictionary<string, HostRecord> HostCases = new()
    {
        ["optional fields null"] = NewHost("h1"),
        ["every field set, extreme counters"] = new(
            "h1", "h1.example", Bytes(1, 300), Bytes(9, 900), Bytes(2, 90), "000bcafe", HostStates.Healthy, "gpu",
            T0, T0.AddSeconds(30), uint.MaxValue, 0, ulong.MaxValue, "ok"),
        ["clock above long.MaxValue, empty certificate"] = new(
            "h1", "h1.example", Bytes(1, 1), [], Bytes(2, 1), "000bbeef", HostStates.Stale, null,
            T0, T0, 1, 2, (ulong)long.MaxValue + 1, null),
    };

    public static TheoryData<string> HostCaseNames => new(HostCases.Keys);

    [Theory]
    [MemberData(nameof(HostCaseNames))]
    public async Task Host_round_trips(string name)
    {
        var host = HostCases[name];
        await Store.InsertHostAsync(host);
        Assert.Equal(Json(host), Json(await Store.GetHostAsync(host.Id)));
        Assert.Equal(Json(host), Json(await Store.GetHostByAkNameAsync(host.AkName)));
        Assert.Equal(Json(new[] { host }), Json(await Store.ListHostsAsync()));
    }

    [Fact]
    public async Task Unknown_host_is_null()
    {
        Assert.Null(await Store.GetHostAsync("nope"));
        Assert.Null(await Store.GetHostByAkNameAsync("nope"));
        Assert.Empty(await Store.ListHostsAsync());
    }

    [Fact]
    public async Task Update_host_replaces_its_fields()
    {
        await Store.InsertHostAsync(NewHost("h1"));
        var updated = HostCases["every field set, extreme counters"];
        await Store.UpdateHostAsync(updated);
        Assert.Equal(Json(updated), Json(await Store.GetHostAsync("h1")));
        var cleared = NewHost("h1");
        await Store.UpdateHostAsync(cleared);
        Assert.Equal(Json(cleared), Json(await Store.GetHostAsync("h1")));
    }

    [Fact]
    public async Task Update_of_an_unknown_host_throws()
    {
        await Assert.ThrowsAsync<KeyNotFoundException>(() => Store.UpdateHostAsync(NewHost("nope")));
    }

    [Fact]
    public async Task Duplicate_host_id_or_ak_name_is_rejected()
    {
        await Store.InsertHostAsync(NewHost("h1"));
        await Assert.ThrowsAnyAsync<DbException>(() => Store.InsertHostAsync(NewHost("h1") with { AkName = "other" }));
        await Assert.ThrowsAnyAsync<DbException>(() => Store.InsertHostAsync(NewHost("h2") with { AkName = "000bh1" }));
    }

    [Fact]
    public async Task Hosts_are_listed_in_enrolment_order()
    {
        foreach (var (id, minutes) in new[] { ("c", 5), ("a", 30), ("d", 1), ("b", 10) })
        {
            await Store.InsertHostAsync(NewHost(id, T0.AddMinutes(minutes)));
        }
        Assert.Equal(["d", "c", "b", "a"], (await Store.ListHostsAsync()).Select(h => h.Id));
    }

    [Theory]
    [InlineData("no certificate")]
    [InlineData("with certificate")]
    public async Task Challenge_round_trips(string name)
    {
        var challenge = new EnrolmentChallengeRecord(
            "c1", "h1.example", Bytes(1, 64), name == "no certificate" ? null : Bytes(7, 500), Bytes(2, 64), Bytes(3, 32), T0.AddMinutes(5));
        await Store.InsertChallengeAsync(challenge);
        Assert.Equal(Json(challenge), Json(await Store.TakeChallengeAsync("c1", T0)));
    }

    [Theory]
    [InlineData("optional fields null")]
    [InlineData("every field set")]
    public async Task Group_round_trips(string name)
    {
        var group = name == "optional fields null"
            ? new HostGroupRecord("gpu", "GPU hosts", null, null, T0)
            : new HostGroupRecord("gpu", "GPU hosts", "CN=Vendor EK CA", "policy-7", T0);
        await Store.UpsertGroupAsync(group);
        Assert.Equal(Json(group), Json(await Store.GetGroupAsync("gpu")));
    }

    [Fact]
    public async Task Upsert_group_updates_fields_and_keeps_creation_time()
    {
        await Store.UpsertGroupAsync(new HostGroupRecord("gpu", "old", "CN=x", "p1", T0));
        await Store.UpsertGroupAsync(new HostGroupRecord("gpu", "new", null, "p2", T0.AddDays(1)));
        Assert.Equal(Json(new HostGroupRecord("gpu", "new", null, "p2", T0)), Json(await Store.GetGroupAsync("gpu")));
    }

    [Fact]
    public async Task Groups_are_listed_by_name_and_deleted_once()
    {
        foreach (var name in new[] { "web", "db", "gpu" })
        {
            await Store.UpsertGroupAsync(new HostGroupRecord(name, name, null, null, T0));
        }
        Assert.Equal(["db", "gpu", "web"], (await Store.ListGroupsAsync()).Select(g => g.Name));
        Assert.True(await Store.DeleteGroupAsync("gpu"));
        Assert.False(await Store.DeleteGroupAsync("gpu"));
        Assert.Null(await Store.GetGroupAsync("gpu"));
        Assert.False(await Store.DeleteGroupAsync("never"));
    }

    [Theory]
    [InlineData("unrevoked")]
    [InlineData("revoked")]
    public async Task Token_round_trips(string name)
    {
        await Store.InsertHostAsync(NewHost("h1"));
        var token = new IssuedTokenRecord("j1", "h1", T0, T0.AddHours(1), name == "revoked" ? T0.AddMinutes(3) : null);
        await Store.InsertTokenAsync(token);
        Assert.Equal(Json(token), Json(await Store.GetTokenAsync("j1")));
        Assert.Null(await Store.GetTokenAsync("j2"));
    }

    [Fact]
    public async Task Api_token_is_found_by_its_exact_hash_only()
    {
        var token = new ApiTokenRecord("t1", "ci", "operator", Bytes(40, 32), T0);
        await Store.InsertApiTokenAsync(token);
        Assert.Equal(Json(token), Json(await Store.FindApiTokenAsync(Bytes(40, 32))));
        var oneBitOff = Bytes(40, 32);
        oneBitOff[31] ^= 1;
        Assert.Null(await Store.FindApiTokenAsync(oneBitOff));
        Assert.Null(await Store.FindApiTokenAsync(Bytes(40, 31)));
        await Assert.ThrowsAnyAsync<DbException>(() => Store.InsertApiTokenAsync(token with { Id = "t2" }));
    }

    [Theory]
    [InlineData("older saved first")]
    [InlineData("newer saved first")]
    public async Task Latest_evidence_is_the_newest(string order)
    {
        await Store.InsertHostAsync(NewHost("h1"));
        var older = new EvidenceRecord("h1", T0, Bytes(5, 1000), """{"sha256":{"0":"aa"}}""", "failed");
        var newer = new EvidenceRecord("h1", T0.AddMinutes(1), [], """{"sha256":{}}""", "ok", Bytes(7, 145), Bytes(8, 262), Bytes(9, 32));
        foreach (var e in order == "older saved first" ? new[] { older, newer } : [newer, older])
        {
            await Store.SaveEvidenceAsync(e);
        }
        Assert.Equal(Json(newer), Json(await Store.GetLatestEvidenceAsync("h1")));
        Assert.Null(await Store.GetLatestEvidenceAsync("h2"));
    }
}

using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Tests.Storage;

/// <summary>API tokens can be listed and deleted; the EK allow list round-trips, replaces, deletes.</summary>
public abstract partial class StoreContractTests
{
    [Fact]
    public async Task Api_tokens_are_listed_in_creation_order_and_deleted_by_id()
    {
        var a = new ApiTokenRecord("t-a", "ops", "fabric-admin", Bytes(1, 32), T0);
        var b = new ApiTokenRecord("t-b", "audit", "auditor", Bytes(2, 32), T0.AddSeconds(1));
        await Store.InsertApiTokenAsync(b);
        await Store.InsertApiTokenAsync(a);
        Assert.Equal(Json(new[] { a, b }), Json(await Store.ListApiTokensAsync()));
        Assert.True(await Store.DeleteApiTokenAsync("t-a"));
        Assert.False(await Store.DeleteApiTokenAsync("t-a"));
        Assert.Null(await Store.FindApiTokenAsync(Bytes(1, 32)));
        Assert.Equal(Json(new[] { b }), Json(await Store.ListApiTokensAsync()));
    }

    [Fact]
    public async Task Ek_allow_round_trips_is_replaced_by_name_and_deleted()
    {
        var first = new EkAllowRecord("000b01", Bytes(7, 400), "rack 4", T0);
        await Store.UpsertEkAllowAsync(first);
        Assert.Equal(Json(first), Json(await Store.GetEkAllowAsync("000b01")));
        var again = first with { Comment = "rack 5", AllowedAt = T0.AddMinutes(1) };
        await Store.UpsertEkAllowAsync(again);
        Assert.Equal(Json(new[] { again }), Json(await Store.ListEkAllowsAsync()));
        Assert.Null(await Store.GetEkAllowAsync("000b02"));
        Assert.True(await Store.DeleteEkAllowAsync("000b01"));
        Assert.False(await Store.DeleteEkAllowAsync("000b01"));
        Assert.Empty(await Store.ListEkAllowsAsync());
    }
}

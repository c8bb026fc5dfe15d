using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Tests.Storage;

/// <summary>Policies are versioned: versions accumulate, the latest is found, a version is never overwritten.</summary>
public abstract partial class StoreContractTests
{
    [Fact]
    public async Task Policy_versions_accumulate_and_the_latest_is_returned()
    {
        var v1 = new PolicyRecord("secure-boot", 1, "audit", "id: secure-boot\nversion: 1\n", T0);
        var v2 = new PolicyRecord("secure-boot", 2, "enforce", "id: secure-boot\nversion: 2\n", T0.AddMinutes(1));
        var other = new PolicyRecord("pcr-baseline", 7, "enforce", "{}", T0);
        await Store.InsertPolicyAsync(v1);
        await Store.InsertPolicyAsync(v2);
        await Store.InsertPolicyAsync(other);
        Assert.Equal(Json(v2), Json(await Store.GetPolicyAsync("secure-boot")));
        Assert.Equal(Json(v1), Json(await Store.GetPolicyAsync("secure-boot", 1)));
        Assert.Null(await Store.GetPolicyAsync("secure-boot", 3));
        Assert.Null(await Store.GetPolicyAsync("nope"));
        Assert.Equal(Json(new[] { other, v2 }), Json(await Store.ListPoliciesAsync()));
        // A released version is never overwritten.
        await Assert.ThrowsAnyAsync<Exception>(() => Store.InsertPolicyAsync(v1 with { Document = "changed" }));
        Assert.Equal(Json(v1), Json(await Store.GetPolicyAsync("secure-boot", 1)));
    }
}

using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Tests.Storage;

/// <summary>Challenges and nonces are single-use and die at expiry; revocation is per host.</summary>
public abstract partial class StoreContractTests
{
    private static DateTimeOffset Expiry => T0.AddMinutes(5);

    [Theory]
    [InlineData("unexpired", 0, true)]
    [InlineData("a millisecond before expiry", 5 * 60_000 - 1, true)]
    [InlineData("at the expiry instant", 5 * 60_000, false)]
    [InlineData("expired", 10 * 60_000, false)]
    public async Task Challenge_is_taken_once_and_only_before_expiry(string name, long nowMs, bool taken)
    {
        _ = name; // labels the case in the test output
        await Store.InsertChallengeAsync(new EnrolmentChallengeRecord("c1", "h1", Bytes(1, 8), null, Bytes(2, 8), Bytes(3, 32), Expiry));
        var now = T0.AddMilliseconds(nowMs);
        Assert.Equal(taken, await Store.TakeChallengeAsync("c1", now) is not null);
        Assert.Null(await Store.TakeChallengeAsync("c1", now));
        Assert.Null(await Store.TakeChallengeAsync("c1", T0));
    }

    [Fact]
    public async Task Unknown_challenge_is_null()
    {
        Assert.Null(await Store.TakeChallengeAsync("nope", T0));
    }

    /// <summary>Nonce "n1" is issued to h1 and expires at T0+5 min; h2 is another enrolled host.</summary>
    [Theory]
    [InlineData("own unexpired nonce", "h1", "n1", 0, true)]
    [InlineData("own nonce a millisecond before expiry", "h1", "n1", 5 * 60_000 - 1, true)]
    [InlineData("own nonce at the expiry instant", "h1", "n1", 5 * 60_000, false)]
    [InlineData("own expired nonce", "h1", "n1", 10 * 60_000, false)]
    [InlineData("another host's nonce", "h2", "n1", 0, false)]
    [InlineData("unknown nonce", "h1", "n2", 0, false)]
    [InlineData("unknown host", "h3", "n1", 0, false)]
    [InlineData("nonce differing in case", "h1", "N1", 0, false)]
    public async Task Nonce_is_consumed_once_by_its_host_before_expiry(string name, string host, string nonce, long nowMs, bool consumed)
    {
        _ = name; // labels the case in the test output
        await Store.InsertHostAsync(NewHost("h1"));
        await Store.InsertHostAsync(NewHost("h2"));
        await Store.InsertNonceAsync(new NonceRecord("n1", "h1", Expiry));
        var now = T0.AddMilliseconds(nowMs);
        Assert.Equal(consumed, await Store.ConsumeNonceAsync(host, nonce, now));
        Assert.False(await Store.ConsumeNonceAsync(host, nonce, now));
        // A failed attempt does not burn the nonce for its rightful host.
        Assert.Equal(!consumed, await Store.ConsumeNonceAsync("h1", "n1", T0));
    }

    [Fact]
    public async Task Purge_deletes_expired_nonces_and_challenges_only()
    {
        await Store.InsertHostAsync(NewHost("h1"));
        await Store.InsertNonceAsync(new NonceRecord("old1", "h1", T0.AddMinutes(-2)));
        await Store.InsertNonceAsync(new NonceRecord("old2", "h1", T0));
        await Store.InsertNonceAsync(new NonceRecord("live", "h1", T0.AddMinutes(1)));
        await Store.InsertChallengeAsync(new EnrolmentChallengeRecord("cold", "h", Bytes(1, 8), null, Bytes(2, 8), Bytes(3, 32), T0.AddSeconds(-1)));
        await Store.InsertChallengeAsync(new EnrolmentChallengeRecord("clive", "h", Bytes(1, 8), null, Bytes(2, 8), Bytes(3, 32), T0.AddSeconds(1)));
        Assert.Equal(3, await Store.PurgeExpiredAsync(T0));
        Assert.Equal(0, await Store.PurgeExpiredAsync(T0));
        Assert.True(await Store.ConsumeNonceAsync("h1", "live", T0));
        Assert.NotNull(await Store.TakeChallengeAsync("clive", T0));
        Assert.Equal(0, await ScalarAsync(Database, "SELECT count(*) FROM nonces"));
    }

    [Fact]
    public async Task Revoke_host_tokens_revokes_only_that_hosts_unrevoked_tokens()
    {
        await Store.InsertHostAsync(NewHost("h1"));
        await Store.InsertHostAsync(NewHost("h2"));
        var earlier = T0.AddMinutes(1);
        var now = T0.AddMinutes(9);
        await Store.InsertTokenAsync(new IssuedTokenRecord("a1", "h1", T0, T0.AddHours(1), null));
        await Store.InsertTokenAsync(new IssuedTokenRecord("a2", "h1", T0, T0.AddHours(1), null));
        await Store.InsertTokenAsync(new IssuedTokenRecord("a3", "h1", T0, T0.AddHours(1), earlier));
        await Store.InsertTokenAsync(new IssuedTokenRecord("b1", "h2", T0, T0.AddHours(1), null));

        Assert.Equal(2, await Store.RevokeHostTokensAsync("h1", now));
        Assert.Equal(now, (await Store.GetTokenAsync("a1"))!.RevokedAt);
        Assert.Equal(now, (await Store.GetTokenAsync("a2"))!.RevokedAt);
        Assert.Equal(earlier, (await Store.GetTokenAsync("a3"))!.RevokedAt);
        Assert.Null((await Store.GetTokenAsync("b1"))!.RevokedAt);
        Assert.Equal(0, await Store.RevokeHostTokensAsync("h1", now.AddMinutes(1)));
        Assert.Equal(0, await Store.RevokeHostTokensAsync("nope", now));
    }
}

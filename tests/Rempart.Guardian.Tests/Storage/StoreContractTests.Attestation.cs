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
    public async Task Recording_an_attestation_of_a_host_that_no_longer_exists_stores_nothing()
    {
        var (host, token, evidence) = Affirmed("gone", 1);
        var e = await Record.ExceptionAsync(() => Store.RecordAttestationAsync(host, token, evidence));
        Assert.True(e is KeyNotFoundException or DbException, $"unexpected {e?.GetType().Name}: {e?.Message}");
        Assert.Null(await Store.GetTokenAsync(token.Jti));
        Assert.Null(await Store.GetLatestEvidenceAsync("gone"));
        await Assert.ThrowsAsync<ArgumentException>(() => Store.RecordAttestationAsync(NewHost("h1"), token, evidence));
    }
}

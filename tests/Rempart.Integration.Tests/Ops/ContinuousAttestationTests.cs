using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Rempart.Host.Guardian;

namespace Rempart.Integration.Tests.Ops;

/// <summary>
/// Continuous attestation: a healthy host that stops attesting for two periods becomes stale, its
/// token is refused at once, the change is audited and a webhook hears of it (through a retry).
/// </summary>
public sealed class ContinuousAttestationTests
{
    [Fact]
    public async Task A_host_silent_for_two_periods_becomes_stale_its_token_is_refused_and_a_webhook_is_told_after_a_retry()
    {
        // The receiver fails the first delivery of the stale event: the Guardian must retry it.
        await using var receiver = await WebhookReceiver.StartAsync((e, earlier) =>
            (string?)e["to"] == "stale" && !earlier.Any(a => (string?)a.Event["to"] == "stale") ? 500 : 200);
        var ops = new JsonObject
        {
            ["attestationPeriodSeconds"] = 60,
            ["sweepIntervalSeconds"] = 1,
            ["webhooks"] = new JsonArray(receiver.Url.ToString()),
            ["webhookInitialBackoffMs"] = 100,
        };
        await using var g = await GuardianFixture.StartAsync(opsJson: ops.ToJsonString());
        using var client = new GuardianClient(g.Url);
        (await g.Admin.PostAsJsonAsync("v1/hostgroups", new { name = "prod" })).EnsureSuccessStatusCode();
        using var host = new SwtpmHost();
        var enrolled = await host.EnrolAsync(client);
        (await g.Admin.PostAsJsonAsync($"v1/hosts/{enrolled.HostId}/approve", new { group = "prod" })).EnsureSuccessStatusCode();
        var affirmed = await host.AttestAsync(client);
        Assert.Equal("affirming", affirmed.Status);
        Assert.True((await client.PostJsonAsync("v1/tokens/validate", new { token = affirmed.Token }))["valid"]!.GetValue<bool>());

        // Just inside two periods: still healthy.
        g.Clock.Advance(TimeSpan.FromSeconds(119));
        var early = await Sweep(g);
        Assert.Empty(early);
        Assert.Equal("healthy", await State(g, enrolled.HostId));

        // Past two periods: stale (this sweep, or the timer's if it came first), token refused.
        g.Clock.Advance(TimeSpan.FromSeconds(2));
        var marked = await Sweep(g);
        Assert.True(marked.Count <= 1);
        Assert.Equal("stale", await State(g, enrolled.HostId));
        var refused = await client.PostJsonAsync("v1/tokens/validate", new { token = affirmed.Token });
        Assert.False(refused["valid"]!.GetValue<bool>());
        Assert.Contains(refused["reason"]!.GetValue<string>(), new[] { "token.revoked", "host.not-healthy" });

        // Audited, with from, to and the reason.
        var audit = await g.Admin.GetFromJsonAsync<JsonObject>("v1/audit?from=1&max=1000");
        var record = audit!["records"]!.AsArray().Select(r => r!).Last(r => (string?)r["kind"] == "host.state" && (string?)r["subject"] == enrolled.HostId);
        var data = JsonNode.Parse(record["dataJson"]!.GetValue<string>())!;
        Assert.Equal(("healthy", "stale", "attest.overdue", 1),
            ((string?)data["from"], (string?)data["to"], (string?)data["reason"], (int?)data["revokedTokens"]));

        // The webhook: the first attempt got a 500, the retry went through; no secret in the event.
        await OpsSupport.EventuallyAsync(() => Task.FromResult(receiver.Attempts.Any(a => a.Status == 200 && (string?)a.Event["to"] == "stale")),
            "the stale event to be delivered");
        var stale = receiver.Attempts.Where(a => (string?)a.Event["to"] == "stale").ToList();
        Assert.Equal([500, 200], stale.Select(a => a.Status));
        var ev = stale[^1].Event;
        Assert.Equal(("host.state", enrolled.HostId, "healthy", "stale", "attest.overdue"),
            ((string?)ev["type"], (string?)ev["hostId"], (string?)ev["from"], (string?)ev["to"], (string?)ev["reason"]));
        Assert.Equal(g.Clock.GetUtcNow().ToUnixTimeMilliseconds(), ev["at"]!.GetValue<DateTimeOffset>().ToUnixTimeMilliseconds());
        Assert.Equal(["type", "hostId", "from", "to", "reason", "at", "auditSeq"], ev.Select(p => p.Key));
        // The earlier approved → healthy change was reported too.
        Assert.Contains(receiver.Attempts, a => (string?)a.Event["from"] == "approved" && (string?)a.Event["to"] == "healthy");

        // Attesting again makes it healthy; then the background monitor alone (no sweep call) marks it stale again.
        Assert.Equal("affirming", (await host.AttestAsync(client)).Status);
        Assert.Equal("healthy", await State(g, enrolled.HostId));
        g.Clock.Advance(TimeSpan.FromSeconds(121));
        await OpsSupport.EventuallyAsync(async () => await State(g, enrolled.HostId) == "stale", "the monitor's own sweep", 5_000);
        // The sweep counts a host after it has stored its new state: wait for the count, not only the state.
        await OpsSupport.EventuallyAsync(async () =>
            OpsSupport.Sample(await g.Admin.GetStringAsync("metrics"), "rempart_hosts_marked_stale_total") == 2, "the second stale mark counted", 5_000);
        Assert.Equal(2, OpsSupport.Sample(await g.Admin.GetStringAsync("metrics"), "rempart_hosts_marked_stale_total"));
    }

    private static async Task<IReadOnlyList<JsonNode>> Sweep(GuardianFixture g)
    {
        var r = await g.Admin.PostAsync("v1/ops/sweep", null);
        r.EnsureSuccessStatusCode();
        return (await r.Content.ReadFromJsonAsync<JsonObject>())!["marked"]!.AsArray().Select(n => n!).ToList();
    }

    private static async Task<string> State(GuardianFixture g, string hostId) =>
        (await g.Admin.GetFromJsonAsync<JsonObject>($"v1/hosts/{hostId}"))!["state"]!.GetValue<string>();
}

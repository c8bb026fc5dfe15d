using System.Collections.Concurrent;
using System.Diagnostics;
using Rempart.Attestation.Protocol;
using Rempart.Host.Guardian;

namespace Rempart.Integration.Tests;

/// <summary>
/// 50 hosts (50 real swtpm TPMs, each booted from a real firmware log) attest at the same time:
/// every result comes back, to the right host, affirming, with a token naming that host.
/// </summary>
public sealed class ConcurrencyTests
{
    private const int Hosts = 50;

    [Fact]
    public async Task Fifty_hosts_attest_concurrently_with_no_lost_or_crossed_results()
    {
        await using var g = await GuardianFixture.StartAsync();
        using var client = new GuardianClient(g.Url);
        await g.CreateGroupAsync("fleet");
        var hosts = new ConcurrentBag<SwtpmHost>();
        try
        {
            // Make, enrol and approve the fleet (a few at a time: 2 cores), then collect evidence for fresh nonces.
            var evidence = new ConcurrentDictionary<string, AttestationEvidence>();
            await Parallel.ForEachAsync(Enumerable.Range(0, Hosts), new ParallelOptions { MaxDegreeOfParallelism = 4 }, async (i, ct) =>
            {
                var host = new SwtpmHost();
                hosts.Add(host);
                var enrolled = await host.EnrolAsync(client, $"hv{i:00}");
                await g.ApproveAsync(enrolled.HostId, "fleet");
                var nonce = await client.NonceAsync(enrolled.HostId, ct);
                evidence[enrolled.HostId] = host.Collect(nonce.Nonce).Evidence;
            });
            Assert.Equal(Hosts, evidence.Count);

            // All 50 attestations at once.
            var sw = Stopwatch.StartNew();
            var results = await Task.WhenAll(evidence.Select(async kv => (Sent: kv.Key, Result: await client.AttestAsync(kv.Value))));
            sw.Stop();

            Assert.Equal(Hosts, results.Length);
            Assert.Equal(Hosts, results.Select(r => r.Result.HostId).Distinct().Count());
            foreach (var (sent, result) in results)
            {
                Assert.Equal(sent, result.HostId);
                Assert.True(result.Status == "affirming", $"{sent}: {string.Join("; ", result.Failures.Select(f => f.Id))}");
                var payload = System.Text.Json.Nodes.JsonNode.Parse(System.Buffers.Text.Base64Url.DecodeFromChars(result.Token!.Split('.')[1]))!;
                Assert.Equal(sent, payload["sub"]!.GetValue<string>());
            }
            var listed = await g.Admin.GetStringAsync("v1/hosts");
            Assert.Equal(Hosts, System.Text.Json.Nodes.JsonNode.Parse(listed)!.AsArray().Count(h => h!["state"]!.GetValue<string>() == "healthy"));
        }
        finally
        {
            foreach (var h in hosts)
            {
                h.Dispose();
            }
        }
    }
}

using Rempart.Attestation.Protocol;
using Rempart.Attestation.Tests;
using Rempart.LoadGen;
using Rempart.ReleaseBench;

namespace Rempart.Integration.Tests;

/// <summary>
/// The key release benchmark measures real releases: its core loop, run for two seconds against a
/// live Guardian, counts releases the Guardian also counted, none refused, and the answers it
/// sampled open with the host's binding key to the VM master key of the key protector asked for —
/// while an answer compared with another VM's key is caught.
/// </summary>
public sealed class ReleaseBenchTests : IAsyncLifetime
{
    private GuardianFixture _g = null!;
    private SoftwareEkCa _ca = null!;
    private GuardianHttp _http = null!;
    private GuardianHttp _admin = null!;

    public async Task InitializeAsync()
    {
        _g = await GuardianFixture.StartAsync(trustSwtpmCa: false);
        _ca = new SoftwareEkCa();
        _ca.WritePem(Path.Combine(_g.DataDir, "trusted-ek-cas"));
        _http = new GuardianHttp(_g.Url, null);
        _admin = new GuardianHttp(_g.Url, null, adminToken: _g.AdminToken);
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        _admin.Dispose();
        _ca.Dispose();
        await _g.DisposeAsync();
    }

    [Fact]
    public async Task Two_seconds_of_the_release_loop_count_only_real_releases_that_open_to_the_right_key()
    {
        var boot = new SimulatedBoot(Fixtures.Bytes("go-tpm-tools__cos-85-amd-sev.bin"));
        var hosts = await ReleaseFleet.EnrolAsync(_http, _admin, _ca, boot, 2, TextWriter.Null, CancellationToken.None);
        try
        {
            var vms = ReleaseFleet.KeyProtectors(await _http.GetTextAsync("v1/guardian/metadata"), 6);
            await ReleaseFleet.AttestAsync(_http, hosts, CancellationToken.None);

            var r = await ReleaseLoad.RunAsync(_http, hosts, vms, 4, TimeSpan.FromMilliseconds(300), TimeSpan.FromSeconds(2), _admin, null, TextWriter.Null, CancellationToken.None);

            Assert.True(r.Released > 0);
            Assert.Empty(r.Errors);
            Assert.True(r.Checked > 0);
            Assert.Empty(r.CheckProblems);
            Assert.True(r.Valid);
            Assert.Equal(r.Released, r.Client.Count);
            // The Guardian's own count of the window: releases only, timed.
            var server = Assert.IsType<ServerLatency>(r.Server);
            Assert.True(server.Released > 0);
            Assert.Equal(server.Count, server.Released);
            Assert.True(server.P50Ms > 0 && server.P50Ms <= server.P99Ms && server.P99Ms <= server.P99UpperMs);
        }
        finally
        {
            foreach (var h in hosts)
            {
                h.Dispose();
            }
        }
    }

    [Fact]
    public async Task The_open_loop_sends_every_scheduled_release_and_counts_each_one_from_its_scheduled_time()
    {
        var boot = new SimulatedBoot(Fixtures.Bytes("go-tpm-tools__cos-85-amd-sev.bin"));
        var hosts = await ReleaseFleet.EnrolAsync(_http, _admin, _ca, boot, 2, TextWriter.Null, CancellationToken.None);
        var connections = Enumerable.Range(0, 3).Select(_ => new GuardianHttp(_g.Url, null, 1)).ToList();
        try
        {
            var vms = ReleaseFleet.KeyProtectors(await _http.GetTextAsync("v1/guardian/metadata"), 6);
            await ReleaseFleet.AttestAsync(_http, hosts, CancellationToken.None);

            var r = await OpenLoad.RunAsync(connections, hosts, vms, 20, TimeSpan.FromMilliseconds(300), TimeSpan.FromSeconds(2), _admin, null, TextWriter.Null, CancellationToken.None);

            // 20/s for 2 s: the 40 releases scheduled in the window, all answered and counted.
            Assert.Equal(40, r.Released);
            Assert.Empty(r.Errors);
            Assert.True(r.Valid);
            Assert.Equal(r.Released, r.Client.Count);
            Assert.True(r.Checked > 0);
            Assert.Empty(r.CheckProblems);
            Assert.Equal(20, r.OfferedPerSecond);
            Assert.InRange(r.MaxInFlight ?? 0, 1, 3 * OpenLoad.MaxInFlightPerConnection);
            Assert.StartsWith("open, 20/s over 3 connections", r.Mode, StringComparison.Ordinal);
            // The Guardian's count may also hold warm-up releases still in flight at the first scrape.
            var server = Assert.IsType<ServerLatency>(r.Server);
            Assert.InRange(server.Released, 40, 40 + r.MaxInFlight!.Value);
            Assert.True(r.Client.P50 > 0 && r.Client.P50 <= r.Client.P99);
        }
        finally
        {
            connections.ForEach(c => c.Dispose());
            foreach (var h in hosts)
            {
                h.Dispose();
            }
        }
    }

    [Fact]
    public async Task The_answer_check_catches_a_key_for_another_VM_or_another_host()
    {
        var boot = new SimulatedBoot(Fixtures.Bytes("go-tpm-tools__cos-85-amd-sev.bin"));
        var hosts = await ReleaseFleet.EnrolAsync(_http, _admin, _ca, boot, 2, TextWriter.Null, CancellationToken.None);
        try
        {
            var vms = ReleaseFleet.KeyProtectors(await _http.GetTextAsync("v1/guardian/metadata"), 2);
            await ReleaseFleet.AttestAsync(_http, hosts, CancellationToken.None);
            var answer = await ReleaseLoad.ReleaseAsync(_http, new ReleaseRequest(vms[0].KeyProtector, hosts[0].Token), CancellationToken.None);

            Assert.Null(ReleaseCheck.Problem(answer, hosts[0], vms[0]));
            Assert.Contains("another key", ReleaseCheck.Problem(answer, hosts[0], vms[0] with { Vmk = vms[1].Vmk }), StringComparison.Ordinal);
            Assert.Contains("asked", ReleaseCheck.Problem(answer, hosts[1], vms[0]), StringComparison.Ordinal);
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

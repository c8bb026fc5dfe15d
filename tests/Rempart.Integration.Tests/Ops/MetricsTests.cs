using System.Net;
using System.Net.Http.Json;
using Rempart.Guardian.Api;
using Rempart.Host.Guardian;
using Rempart.Tpm;
using Rempart.Tpm.Structures;

namespace Rempart.Integration.Tests.Ops;

/// <summary><c>GET /metrics</c>: Prometheus text, behind a token, counting what really happened.</summary>
public sealed class MetricsTests : IAsyncLifetime
{
    private GuardianFixture _g = null!;
    private GuardianClient _client = null!;

    public async Task InitializeAsync()
    {
        _g = await GuardianFixture.StartAsync();
        _client = new GuardianClient(_g.Url);
        await _g.CreateGroupAsync("prod");
    }

    public async Task DisposeAsync()
    {
        _client.Dispose();
        await _g.DisposeAsync();
    }

    [Fact]
    public async Task Metrics_need_an_auditor_or_admin_token()
    {
        Assert.Equal(HttpStatusCode.Unauthorized, (await _g.Http.GetAsync("metrics")).StatusCode);
        using var tenant = await OpsSupport.ClientWithRoleAsync(_g.App, _g.Url, Roles.Tenant);
        Assert.Equal(HttpStatusCode.Forbidden, (await tenant.GetAsync("metrics")).StatusCode);

        using var auditor = await OpsSupport.ClientWithRoleAsync(_g.App, _g.Url, Roles.Auditor);
        var ok = await auditor.GetAsync("metrics");
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal("text/plain; version=0.0.4; charset=utf-8", ok.Content.Headers.ContentType!.ToString());
        // An auditor reads; only a fabric admin may act.
        Assert.Equal(HttpStatusCode.Forbidden, (await auditor.PostAsync("v1/ops/sweep", null)).StatusCode);
    }

    [Fact]
    public async Task An_affirming_and_a_contraindicated_attestation_are_counted_timed_and_move_the_hosts_gauge()
    {
        using var host = new SwtpmHost();
        var enrolled = await host.EnrolAsync(_client);
        await _g.ApproveAsync(enrolled.HostId, "prod");
        var before = await _g.Admin.GetStringAsync("metrics");
        Assert.Equal(1, OpsSupport.Sample(before, "rempart_enrolments_total{result=\"pending\"}"));
        Assert.Equal(1, OpsSupport.Sample(before, "rempart_hosts{state=\"approved\"}"));
        Assert.Equal(0, OpsSupport.Sample(before, "rempart_attestations_total{result=\"affirming\"}"));

        Assert.Equal("affirming", (await host.AttestAsync(_client)).Status);
        var affirmed = await _g.Admin.GetStringAsync("metrics");
        Assert.Equal(1, OpsSupport.Sample(affirmed, "rempart_attestations_total{result=\"affirming\"}"));
        Assert.Equal(0, OpsSupport.Sample(affirmed, "rempart_attestations_total{result=\"contraindicated\"}"));
        Assert.Equal(1, OpsSupport.Sample(affirmed, "rempart_hosts{state=\"healthy\"}"));
        Assert.Equal(0, OpsSupport.Sample(affirmed, "rempart_hosts{state=\"approved\"}"));

        // An extend after boot: the log no longer explains PCR 0.
        using (var c = host.Tpm.Client())
        {
            c.PcrExtend(0, new TpmlDigestValues([new TpmtHa(TpmAlgId.Sha1, new byte[20]), new TpmtHa(TpmAlgId.Sha256, new byte[32])]));
        }
        Assert.Equal("contraindicated", (await host.AttestAsync(_client)).Status);
        var failed = await _g.Admin.GetStringAsync("metrics");
        Assert.Equal(1, OpsSupport.Sample(failed, "rempart_attestations_total{result=\"affirming\"}"));
        Assert.Equal(1, OpsSupport.Sample(failed, "rempart_attestations_total{result=\"contraindicated\"}"));
        Assert.Equal(0, OpsSupport.Sample(failed, "rempart_hosts{state=\"healthy\"}"));
        Assert.Equal(1, OpsSupport.Sample(failed, "rempart_hosts{state=\"failed\"}"));

        // The histogram: both timed, cumulative buckets, a positive sum.
        Assert.Equal(2, OpsSupport.Sample(failed, "rempart_attestation_duration_seconds_count"));
        Assert.Equal(2, OpsSupport.Sample(failed, "rempart_attestation_duration_seconds_bucket{le=\"+Inf\"}"));
        Assert.True(OpsSupport.Sample(failed, "rempart_attestation_duration_seconds_sum") > 0);
        Assert.True(OpsSupport.Sample(failed, "rempart_attestation_duration_seconds_bucket{le=\"0.005\"}")
            <= OpsSupport.Sample(failed, "rempart_attestation_duration_seconds_bucket{le=\"10\"}"));
        Assert.Contains("# TYPE rempart_attestation_duration_seconds histogram\n", failed, StringComparison.Ordinal);
        // Every line is a comment or `name{label="value"} number` (text exposition format 0.0.4).
        Assert.All(failed.TrimEnd('\n').Split('\n'), line =>
            Assert.Matches("""^(# (HELP|TYPE) [a-z_]+ .+|[a-z_]+(\{[a-z]+="[^"\\\n]*"\})? [0-9.eE+-]+)$""", line));

        // A refused enrolment is counted under its problem id.
        var again = await Assert.ThrowsAsync<GuardianException>(() => host.EnrolAsync(_client));
        Assert.Equal(1, OpsSupport.Sample(await _g.Admin.GetStringAsync("metrics"), $"rempart_enrolments_total{{result=\"{again.Id}\"}}"));
    }

    [Fact]
    public async Task A_refused_key_release_is_counted_under_its_problem_id_and_timed()
    {
        var before = await _g.Admin.GetStringAsync("metrics");
        Assert.Equal(0, OpsSupport.Sample(before, "rempart_releases_total{result=\"released\"}"));
        Assert.Equal(0, OpsSupport.Sample(before, "rempart_release_duration_seconds_count"));

        var refused = await _g.Http.PostAsJsonAsync("v1/releases", new { keyProtector = "{\"v\":1}", token = "x.y.z" });
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        var after = await _g.Admin.GetStringAsync("metrics");
        Assert.Equal(1, OpsSupport.Sample(after, "rempart_releases_total{result=\"release.kp.format\"}"));
        Assert.Equal(0, OpsSupport.Sample(after, "rempart_releases_total{result=\"released\"}"));
        Assert.Equal(1, OpsSupport.Sample(after, "rempart_release_duration_seconds_count"));
        Assert.Equal(1, OpsSupport.Sample(after, "rempart_release_duration_seconds_bucket{le=\"+Inf\"}"));
        Assert.True(OpsSupport.Sample(after, "rempart_release_duration_seconds_sum") > 0);
        Assert.Contains("# TYPE rempart_release_duration_seconds histogram\n", after, StringComparison.Ordinal);
        // A GET of the release list is not a release.
        await _g.Admin.GetStringAsync("v1/releases?vmId=vm-x");
        Assert.Equal(1, OpsSupport.Sample(await _g.Admin.GetStringAsync("metrics"), "rempart_release_duration_seconds_count"));
    }
}

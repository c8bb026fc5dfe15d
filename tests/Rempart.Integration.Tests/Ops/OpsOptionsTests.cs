using Rempart.Guardian.Ops;

namespace Rempart.Integration.Tests.Ops;

/// <summary><c>DATA/ops.json</c>: defaults without it, and a refusal naming the problem for each way it can be wrong.</summary>
public sealed class OpsOptionsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-ops-options-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Without_a_file_the_defaults_apply_and_a_valid_file_is_read()
    {
        var defaults = OpsOptions.Load(_dir);
        Assert.Equal((TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(120), 0), (defaults.AttestationPeriod, defaults.StaleAfter, defaults.Webhooks.Count));

        File.WriteAllText(Path.Combine(_dir, OpsOptions.FileName), """
            { // comments allowed
              "attestationPeriodSeconds": 30, "sweepIntervalSeconds": 2, "webhookMaxAttempts": 3,
              "webhooks": ["https://ops.example/hook/abc", "http://127.0.0.1:9000/hook", "http://localhost/x"]
            }
            """);
        var read = OpsOptions.Load(_dir);
        Assert.Equal((TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(2), 3, 3),
            (read.StaleAfter, read.SweepInterval, read.WebhookMaxAttempts, read.Webhooks.Count));
    }

    [Theory]
    [InlineData("unknown_key", """{"attestationPeriod": 60}""", "attestationPeriod")]
    [InlineData("period_zero", """{"attestationPeriodSeconds": 0}""", "attestationPeriodSeconds")]
    [InlineData("sweep_too_long", """{"sweepIntervalSeconds": 7200}""", "sweepIntervalSeconds")]
    [InlineData("attempts_zero", """{"webhookMaxAttempts": 0}""", "webhookMaxAttempts")]
    [InlineData("backoff_tiny", """{"webhookInitialBackoffMs": 1}""", "webhookInitialBackoffMs")]
    [InlineData("webhook_relative", """{"webhooks": ["/hook"]}""", "webhooks[0] is not an absolute http(s) URL")]
    [InlineData("webhook_plain_http_remote", """{"webhooks": ["http://ops.example/hook"]}""", "must be https")]
    [InlineData("webhook_ftp", """{"webhooks": ["ftp://ops.example/hook"]}""", "is not an absolute http(s) URL")]
    [InlineData("webhook_credentials", """{"webhooks": ["https://user:pw@ops.example/hook"]}""", "credentials")]
    [InlineData("not_json", """{"webhooks": [""", "ops.json")]
    public void A_bad_file_stops_the_Guardian_with_a_message_naming_the_problem(string @case, string json, string named)
    {
        File.WriteAllText(Path.Combine(_dir, OpsOptions.FileName), json);
        var e = Assert.Throws<InvalidOperationException>(() => OpsOptions.Load(_dir));
        Assert.True(e.Message.Contains(named, StringComparison.Ordinal), $"{@case}: {e.Message}");
        Assert.DoesNotContain("pw@", e.Message, StringComparison.Ordinal);
    }
}

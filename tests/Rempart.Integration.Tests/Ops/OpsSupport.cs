using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Rempart.Guardian.Storage;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Integration.Tests.Ops;

/// <summary>Helpers of the operations tests: API tokens of other roles, the CLI, metric samples.</summary>
internal static class OpsSupport
{
    public static string RepoRoot { get; } = FindRoot();

    /// <summary>Adds an API token with <paramref name="role"/> straight to the store (no endpoint issues them yet).</summary>
    public static async Task<HttpClient> ClientWithRoleAsync(WebApplication app, Uri url, string role)
    {
        var token = "rpt_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
        var store = app.Services.GetRequiredService<IGuardianStore>();
        var id = role + "-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        await store.InsertApiTokenAsync(new ApiTokenRecord(id, id, role, SHA256.HashData(Encoding.UTF8.GetBytes(token)), DateTimeOffset.UtcNow));
        var client = new HttpClient { BaseAddress = url };
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        return client;
    }

    /// <summary>Runs the CLI through its one entry point, scripts/rempart, as a user would.</summary>
    public static Tool.Result Cli(params string[] args) =>
        Tool.Run(Path.Combine(RepoRoot, "scripts", "rempart"), args, timeoutMs: 300_000);

    /// <summary>The value of one sample of a Prometheus text exposition, e.g. <c>rempart_hosts{state="healthy"}</c>.</summary>
    public static double Sample(string exposition, string series)
    {
        var line = exposition.Split('\n').SingleOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal))
            ?? throw new Xunit.Sdk.XunitException($"no sample {series} in:\n{exposition}");
        return double.Parse(line[(series.Length + 1)..], CultureInfo.InvariantCulture);
    }

    /// <summary>Polls until <paramref name="condition"/> holds (background work the test cannot await).</summary>
    public static async Task EventuallyAsync(Func<Task<bool>> condition, string what, int timeoutMs = 10_000)
    {
        var until = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (!await condition())
        {
            if (DateTime.UtcNow > until)
            {
                throw new Xunit.Sdk.XunitException($"timed out after {timeoutMs} ms waiting for {what}");
            }
            await Task.Delay(50);
        }
    }

    // From the test binaries, or (when they were built under another --artifacts-path) from this source file.
    private static string FindRoot([System.Runtime.CompilerServices.CallerFilePath] string source = "")
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Path.GetDirectoryName(source) ?? "" })
        {
            var dir = new DirectoryInfo(start);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Rempart.slnx")))
            {
                dir = dir.Parent;
            }
            if (dir is not null)
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("repository root (Rempart.slnx) not found");
    }
}

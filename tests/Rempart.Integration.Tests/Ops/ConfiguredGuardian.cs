using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;

namespace Rempart.Integration.Tests.Ops;

/// <summary>
/// A real Guardian like <see cref="GuardianFixture"/>'s (SQLite, swtpm's CA trusted, a test
/// clock), started with an operations file <c>DATA/ops.json</c> written before it starts.
/// </summary>
public sealed class ConfiguredGuardian : IAsyncDisposable
{
    private ConfiguredGuardian(WebApplication app, string dir, Uri url, TestClock clock, string adminToken)
    {
        App = app;
        DataDir = dir;
        Url = url;
        Clock = clock;
        Admin = new HttpClient { BaseAddress = url };
        Admin.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", adminToken);
    }

    public WebApplication App { get; }

    public string DataDir { get; }

    public Uri Url { get; }

    public TestClock Clock { get; }

    public HttpClient Admin { get; }

    public static async Task<ConfiguredGuardian> StartAsync(string opsJson)
    {
        var dir = Directory.CreateTempSubdirectory("rempart-guardian-ops-").FullName;
        var cas = Path.Combine(dir, "trusted-ek-cas");
        Directory.CreateDirectory(cas);
        using (new Rempart.Tpm.Tests.Infrastructure.Swtpm("sha256"))
        {
            // Makes sure swtpm's local CA exists.
        }
        foreach (var f in GuardianFixture.SwtpmLocalCa)
        {
            File.Copy(f, Path.Combine(cas, Path.GetFileName(f)));
        }
        await File.WriteAllTextAsync(Path.Combine(dir, Rempart.Guardian.Ops.OpsOptions.FileName), opsJson);
        int port;
        using (var l = new TcpListener(IPAddress.Loopback, 0))
        {
            l.Start();
            port = ((IPEndPoint)l.LocalEndpoint).Port;
        }
        var clock = new TestClock();
        var serve = new Rempart.Guardian.ServeOptions(
            new Rempart.Guardian.GuardianOptions { DataDir = dir, TrustedEkCaDir = cas },
            new IPEndPoint(IPAddress.Loopback, port), InsecureHttp: true, null, "test-secret-not-for-production"u8.ToArray());
        var app = await Rempart.Guardian.GuardianServer.BuildAsync(serve, clock, _ => { });
        await app.StartAsync();
        var token = (await File.ReadAllTextAsync(Path.Combine(dir, "admin-token"))).Trim();
        return new ConfiguredGuardian(app, dir, new Uri($"http://127.0.0.1:{port}/"), clock, token);
    }

    public async ValueTask DisposeAsync()
    {
        Admin.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
        try
        {
            Directory.Delete(DataDir, true);
        }
        catch (IOException)
        {
        }
    }
}

using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Rempart.Attestation.Protocol;

namespace Rempart.Integration.Tests;

/// <summary>A clock the tests move forward (nonce and token expiry).</summary>
public sealed class TestClock : TimeProvider
{
    private DateTimeOffset _now = DateTimeOffset.UtcNow;

    public override DateTimeOffset GetUtcNow() => _now;

    public void Advance(TimeSpan by) => _now += by;
}

/// <summary>
/// A real Guardian (the production web application) on a free loopback port, SQLite or
/// PostgreSQL, trusting swtpm's local CA for EK certificates.
/// </summary>
public sealed class GuardianFixture : IAsyncDisposable
{
    private GuardianFixture(WebApplication app, string dir, Uri url, string adminToken, TestClock clock, string? fingerprint)
    {
        App = app;
        DataDir = dir;
        Url = url;
        AdminToken = adminToken;
        Clock = clock;
        Fingerprint = fingerprint;
        Http = new HttpClient(Handler(fingerprint)) { BaseAddress = url };
        Admin = new HttpClient(Handler(fingerprint)) { BaseAddress = url };
        Admin.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", adminToken);
    }

    public WebApplication App { get; }

    public string DataDir { get; }

    public Uri Url { get; }

    public string AdminToken { get; }

    public TestClock Clock { get; }

    public HttpClient Http { get; }

    public HttpClient Admin { get; }

    /// <summary>Over HTTPS: the hex SHA-256 of the Guardian's TLS certificate (DER), what agents pin with --guardian-fingerprint; null over plain HTTP.</summary>
    public string? Fingerprint { get; }

    /// <summary>swtpm_setup's local CA (root and issuer), created by the first swtpm_setup run as root.</summary>
    public static readonly string[] SwtpmLocalCa = ["/var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem", "/var/lib/swtpm-localca/issuercert.pem"];

    /// <summary>
    /// Starts a Guardian; <paramref name="opsJson"/>, when given, is written as DATA/ops.json before it starts; <paramref name="keys"/> picks the key provider (default file).
    /// By default it serves plain HTTP on a free loopback port; with <paramref name="https"/> it serves HTTPS (its self-signed certificate, see <see cref="Fingerprint"/>)
    /// on that address, on a free port of it when the port is 0.
    /// </summary>
    public static async Task<GuardianFixture> StartAsync(bool trustSwtpmCa = true, string? postgres = null, string? opsJson = null, Rempart.Guardian.Keys.KeyProviderOptions? keys = null, IPEndPoint? https = null)
    {
        var dir = Directory.CreateTempSubdirectory("rempart-guardian-").FullName;
        var cas = Path.Combine(dir, "trusted-ek-cas");
        Directory.CreateDirectory(cas);
        if (trustSwtpmCa)
        {
            // The CA exists once any swtpm_setup --create-ek-cert has run; make sure one has.
            using (new Rempart.Tpm.Tests.Infrastructure.Swtpm("sha256"))
            {
            }
            foreach (var f in SwtpmLocalCa)
            {
                File.Copy(f, Path.Combine(cas, Path.GetFileName(f)));
            }
        }
        if (opsJson is not null)
        {
            await File.WriteAllTextAsync(Path.Combine(dir, Rempart.Guardian.Ops.OpsOptions.FileName), opsJson);
        }
        var listen = https is null ? new IPEndPoint(IPAddress.Loopback, FreePort(IPAddress.Loopback))
            : https.Port == 0 ? new IPEndPoint(https.Address, FreePort(https.Address)) : https;
        var clock = new TestClock();
        var serve = new Rempart.Guardian.ServeOptions(
            new Rempart.Guardian.GuardianOptions { DataDir = dir, TrustedEkCaDir = cas },
            listen, InsecureHttp: https is null, postgres, "test-secret-not-for-production"u8.ToArray(), keys);
        var app = await Rempart.Guardian.GuardianServer.BuildAsync(serve, clock, _ => { });
        await app.StartAsync();
        var token = (await File.ReadAllTextAsync(Path.Combine(dir, "admin-token"))).Trim();
        if (https is null)
        {
            return new GuardianFixture(app, dir, new Uri($"http://127.0.0.1:{listen.Port}/"), token, clock, null);
        }
        // The certificate exists once Kestrel listens: the same fingerprint the server prints at start.
        using var cert = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(await File.ReadAllTextAsync(Path.Combine(dir, "tls-cert.pem")));
        var fingerprint = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(cert.RawData));
        return new GuardianFixture(app, dir, new Uri($"https://{listen}/"), token, clock, fingerprint);
    }

    public async Task CreateGroupAsync(string name)
    {
        var r = await Admin.PostAsJsonAsync("v1/hostgroups", new { name, description = "test" });
        r.EnsureSuccessStatusCode();
    }

    public async Task ApproveAsync(string hostId, string group)
    {
        var r = await Admin.PostAsJsonAsync($"v1/hosts/{hostId}/approve", new { group });
        r.EnsureSuccessStatusCode();
    }

    /// <summary>Plain HTTP, or HTTPS trusting exactly the certificate with this fingerprint (as the agent pins it).</summary>
    private static SocketsHttpHandler Handler(string? fingerprint) => new()
    {
        SslOptions = fingerprint is null ? new() : new()
        {
            RemoteCertificateValidationCallback = (_, cert, _, _) => cert is not null &&
                System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(
                    System.Security.Cryptography.SHA256.HashData(cert.GetRawCertData()), Convert.FromHexString(fingerprint)),
        },
    };

    private static int FreePort(IPAddress address)
    {
        using var l = new TcpListener(address, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
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

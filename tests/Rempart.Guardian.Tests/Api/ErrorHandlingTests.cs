using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Rempart.Guardian.Tests.Api;

/// <summary>
/// What a client sees when a request fails: its own mistake (unreadable JSON) is a 400
/// <c>request.invalid</c>; the Guardian's own failure is a 500 <c>internal</c> — never blamed on the
/// client, and never with a stack trace or the exception's message in the answer.
/// </summary>
public sealed class ErrorHandlingTests : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-guardian-errors-").FullName;
    private WebApplication _app = null!;
    private HttpClient _http = null!;

    public async Task InitializeAsync()
    {
        int port;
        using (var l = new TcpListener(IPAddress.Loopback, 0))
        {
            l.Start();
            port = ((IPEndPoint)l.LocalEndpoint).Port;
        }
        var serve = new ServeOptions(new GuardianOptions { DataDir = _dir, TrustedEkCaDir = Path.Combine(_dir, "cas") },
            new IPEndPoint(IPAddress.Loopback, port), InsecureHttp: true, null, "test-secret-not-for-production"u8.ToArray());
        _app = await GuardianServer.BuildAsync(serve, null, _ => { });
        // A handler that fails the way a bug or a broken dependency would (the message must not reach the client).
        _app.MapGet("/v1/test/fails", (HttpContext _) => throw new InvalidOperationException("internal detail: table rempart_hosts is locked"));
        await _app.StartAsync();
        _http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}/") };
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
        Directory.Delete(_dir, true);
    }

    [Fact]
    public async Task A_failure_of_the_Guardian_is_a_500_without_its_message_or_stack()
    {
        var r = await _http.GetAsync("v1/test/fails");
        var body = await r.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.InternalServerError, r.StatusCode);
        Assert.Equal("internal", JsonNode.Parse(body)!["title"]!.GetValue<string>());
        Assert.DoesNotContain("rempart_hosts", body);
        Assert.DoesNotContain("   at ", body);
    }

    [Fact]
    public async Task Unreadable_JSON_is_the_clients_400()
    {
        var r = await _http.PostAsync("v1/releases", new StringContent("{\"keyProtector\": ", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
        Assert.Equal("request.invalid", JsonNode.Parse(await r.Content.ReadAsStringAsync())!["title"]!.GetValue<string>());
    }
}

using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Rempart.Integration.Tests.Ops;

/// <summary>
/// A real webhook peer: Kestrel on a loopback port the OS picks. Every POST is recorded with the
/// status it was answered; <c>answer</c> decides that status from the event.
/// </summary>
public sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;

    private WebhookReceiver(WebApplication app, Uri url)
    {
        _app = app;
        Url = url;
    }

    public Uri Url { get; }

    public ConcurrentQueue<(int Status, JsonObject Event)> Attempts { get; } = new();

    public static async Task<WebhookReceiver> StartAsync(Func<JsonObject, IReadOnlyCollection<(int Status, JsonObject Event)>, int> answer)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        WebhookReceiver? self = null;
        app.MapPost("/hook/{secret}", async (HttpRequest request) =>
        {
            var body = (JsonObject)(await JsonNode.ParseAsync(request.Body))!;
            var status = answer(body, self!.Attempts);
            self.Attempts.Enqueue((status, body));
            return Results.StatusCode(status);
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        // A path segment stands for the secret such URLs often carry: it must never reach a log.
        self = new WebhookReceiver(app, new Uri(address + "/hook/s3cr3t-path"));
        return self;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Serialization;
using System.Threading.Channels;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Rempart.Guardian.Ops;

/// <summary>
/// A host state event as webhooks receive it. Ids, state names, a stable reason and the audit
/// record's seq (receivers can de-duplicate on it) — never a token, key or evidence.
/// </summary>
public sealed record HostStateEvent(
    [property: JsonPropertyName("type")] string Type,
    [property: JsonPropertyName("hostId")] string HostId,
    [property: JsonPropertyName("from")] string From,
    [property: JsonPropertyName("to")] string To,
    [property: JsonPropertyName("reason")] string Reason,
    [property: JsonPropertyName("at")] DateTimeOffset At,
    [property: JsonPropertyName("auditSeq")] long AuditSeq);

/// <summary>
/// Delivers events to every configured webhook from a bounded queue, off the request path: a
/// POST of the event as JSON, retried on network errors, timeouts, 408, 429 and 5xx with
/// exponential backoff (<see cref="OpsOptions.WebhookInitialBackoff"/>, doubled, at most
/// <see cref="OpsOptions.WebhookMaxAttempts"/> attempts); other 4xx answers are final.
/// Events reach each URL in order. Redirects are not followed. Logs name a webhook by its
/// origin only: the path or query of a webhook URL often carries its secret.
/// </summary>
public sealed partial class WebhookSender : BackgroundService
{
    private const int QueueCapacity = 1024;

    private readonly OpsOptions _options;
    private readonly OpsMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly ILogger<WebhookSender> _log;
    private readonly Channel<HostStateEvent> _queue;
    private readonly HttpClient _http;

    public WebhookSender(OpsOptions options, OpsMetrics metrics, TimeProvider time, ILogger<WebhookSender> log)
    {
        _options = options;
        _metrics = metrics;
        _time = time;
        _log = log;
        _queue = Channel.CreateBounded<HostStateEvent>(
            new BoundedChannelOptions(QueueCapacity) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true },
            dropped => metrics.Webhook("dropped"));
        _http = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false, PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
        {
            Timeout = options.WebhookTimeout,
        };
    }

    /// <summary>Queues an event for every webhook; never blocks (when the queue is full the oldest event is dropped and counted).</summary>
    public void Enqueue(HostStateEvent e)
    {
        if (_options.Webhooks.Count > 0)
        {
            _queue.Writer.TryWrite(e);
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await foreach (var e in _queue.Reader.ReadAllAsync(stoppingToken))
            {
                await Task.WhenAll(_options.Webhooks.Select(url => DeliverAsync(url, e, stoppingToken)));
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    private async Task DeliverAsync(Uri url, HostStateEvent e, CancellationToken ct)
    {
        var origin = url.GetLeftPart(UriPartial.Authority);
        var backoff = _options.WebhookInitialBackoff;
        string last = "";
        for (int attempt = 1; attempt <= _options.WebhookMaxAttempts; attempt++)
        {
            bool retry;
            try
            {
                using var response = await _http.PostAsJsonAsync(url, e, ct);
                if (response.IsSuccessStatusCode)
                {
                    _metrics.Webhook("delivered");
                    return;
                }
                var code = (int)response.StatusCode;
                last = $"HTTP {code}";
                retry = code >= 500 || response.StatusCode is HttpStatusCode.RequestTimeout or HttpStatusCode.TooManyRequests;
            }
            catch (HttpRequestException ex)
            {
                last = ex.HttpRequestError.ToString();
                retry = true;
            }
            catch (TaskCanceledException) when (!ct.IsCancellationRequested)
            {
                last = "timeout";
                retry = true;
            }
            if (!retry || attempt == _options.WebhookMaxAttempts)
            {
                break;
            }
            await Task.Delay(backoff, _time, ct);
            backoff *= 2;
        }
        _metrics.Webhook("failed");
        DeliveryFailed(_log, e.Type, e.AuditSeq, origin, last);
    }

    public override void Dispose()
    {
        _queue.Writer.TryComplete();
        _http.Dispose();
        base.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "webhook event {Type} (audit seq {Seq}) to {Origin} not delivered: {Last}")]
    private static partial void DeliveryFailed(ILogger logger, string type, long seq, string origin, string last);
}

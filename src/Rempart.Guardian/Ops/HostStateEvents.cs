using System.Data.Common;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Ops;

/// <summary>
/// Turns host state changes into webhook events. Every state change — an attestation that
/// affirms or fails a host, the monitor marking it stale — is written as a <c>host.state</c>
/// audit record, so this follows the audit log from its head at start: one source of truth, no
/// hook in the attestation path, and an event can never report a change the log does not hold.
/// It reads when nudged (after an attestation or a sweep) and every sweep interval otherwise.
/// Nothing runs when no webhook is configured.
/// </summary>
public sealed partial class HostStateEvents(IGuardianStore store, OpsOptions options, WebhookSender sender, TimeProvider time,
    ILogger<HostStateEvents> log) : BackgroundService
{
    private const int PageSize = 500;

    private readonly Channel<bool> _nudges = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });
    private long _next = 1;

    /// <summary>Asks for a read of new audit records soon (never blocks).</summary>
    public void Nudge() => _nudges.Writer.TryWrite(true);

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        if (options.Webhooks.Count > 0)
        {
            _next = await HeadAsync(cancellationToken) + 1;
        }
        await base.StartAsync(cancellationToken);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (options.Webhooks.Count == 0)
        {
            return;
        }
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                using (var timeout = new CancellationTokenSource(options.SweepInterval, time))
                using (var wait = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, stoppingToken))
                {
                    try
                    {
                        await _nudges.Reader.ReadAsync(wait.Token);
                    }
                    catch (OperationCanceledException) when (!stoppingToken.IsCancellationRequested)
                    {
                    }
                }
                try
                {
                    await ReadNewAsync(stoppingToken);
                }
                catch (Exception e) when (e is DbException or TimeoutException or IOException)
                {
                    ReadFailed(log, e.GetType().Name, e.Message);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    private async Task ReadNewAsync(CancellationToken ct)
    {
        while (true)
        {
            var page = await store.ReadAuditAsync(_next, PageSize, ct);
            foreach (var r in page)
            {
                if (r.Kind == "host.state" && Parse(r) is { } e)
                {
                    sender.Enqueue(e);
                }
                _next = r.Seq + 1;
            }
            if (page.Count < PageSize)
            {
                return;
            }
        }
    }

    /// <summary>The event a <c>host.state</c> record describes: ids and state names only, nothing secret.</summary>
    internal static HostStateEvent? Parse(AuditRecord r)
    {
        try
        {
            var data = JsonNode.Parse(r.DataJson) as JsonObject;
            var from = data?["from"]?.GetValue<string>();
            var to = data?["to"]?.GetValue<string>();
            if (from is null || to is null)
            {
                return null;
            }
            var reason = data!["reason"]?.GetValue<string>()
                ?? (to == HostStates.Healthy ? (data["reboot"]?.GetValue<bool>() == true ? "attest.affirming.reboot" : "attest.affirming") : "unspecified");
            return new HostStateEvent("host.state", r.Subject, from, to, reason, r.At, r.Seq);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            return null;
        }
    }

    /// <summary>The newest audit seq (0 for an empty log): a binary search on "is there a record at or after seq".</summary>
    private async Task<long> HeadAsync(CancellationToken ct)
    {
        async Task<bool> Any(long seq) => (await store.ReadAuditAsync(seq, 1, ct)).Count > 0;
        long low = 0, high = 1;
        while (await Any(high))
        {
            low = high;
            high *= 2;
        }
        // A record exists at or after low (or low is 0), none at or after high: the head is low.
        while (high - low > 1)
        {
            var mid = low + ((high - low) / 2);
            if (await Any(mid))
            {
                low = mid;
            }
            else
            {
                high = mid;
            }
        }
        return low;
    }

    public override void Dispose()
    {
        _nudges.Writer.TryComplete();
        base.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "reading the audit log for host state events failed: {Error}: {Detail}")]
    private static partial void ReadFailed(ILogger logger, string error, string detail);
}

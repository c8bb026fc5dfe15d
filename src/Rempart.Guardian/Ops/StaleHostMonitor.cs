using System.Data.Common;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Ops;

/// <summary>A host state change made by the operations services.</summary>
public sealed record HostTransition(
    [property: JsonPropertyName("hostId")] string HostId,
    [property: JsonPropertyName("from")] string From,
    [property: JsonPropertyName("to")] string To,
    [property: JsonPropertyName("reason")] string Reason,
    [property: JsonPropertyName("revokedTokens")] int RevokedTokens,
    [property: JsonPropertyName("at")] DateTimeOffset At);

/// <summary>
/// Continuous attestation: every <see cref="OpsOptions.SweepInterval"/>, a healthy host whose last
/// attestation is older than <see cref="OpsOptions.StaleAfter"/> (two attestation periods)
/// becomes <c>stale</c>, its health tokens are revoked at once, and a <c>host.state</c> audit
/// record says why (<c>attest.overdue</c>). Only healthy hosts are judged: a failed host stays
/// failed, a pending one was never trusted. A stale host is healthy again after its next
/// affirming attestation.
/// </summary>
public sealed partial class StaleHostMonitor(
    IGuardianStore store, Audit audit, TimeProvider time, OpsOptions options, OpsMetrics metrics, HostStateEvents events,
    ILogger<StaleHostMonitor> log) : BackgroundService
{
    /// <summary>The stable reason of the stale transition.</summary>
    public const string OverdueReason = "attest.overdue";

    private readonly SemaphoreSlim _gate = new(1, 1);

    /// <summary>One sweep, now (the timer's and <c>POST /v1/ops/sweep</c>'s): the transitions it made.</summary>
    public async Task<IReadOnlyList<HostTransition>> SweepAsync(CancellationToken ct)
    {
        await _gate.WaitAsync(ct);
        try
        {
            var now = time.GetUtcNow();
            var cutoff = now - options.StaleAfter;
            var made = new List<HostTransition>();
            foreach (var listed in await store.ListHostsAsync(ct))
            {
                if (!IsOverdue(listed, cutoff))
                {
                    continue;
                }
                // Read again: an attestation may have landed since the list was read.
                var host = await store.GetHostAsync(listed.Id, ct);
                if (host is null || !IsOverdue(host, cutoff))
                {
                    continue;
                }
                // Fail closed first: no token of this host validates from here on.
                int revoked = await store.RevokeHostTokensAsync(host.Id, now, ct);
                await store.UpdateHostAsync(host with { State = HostStates.Stale, LastStatus = OverdueReason }, ct);
                await audit.WriteAsync("host.state", host.Id, new
                {
                    from = host.State,
                    to = HostStates.Stale,
                    reason = OverdueReason,
                    revokedTokens = revoked,
                    lastAttestedAt = host.LastAttestedAt,
                }, ct);
                made.Add(new HostTransition(host.Id, host.State, HostStates.Stale, OverdueReason, revoked, now));
            }
            if (made.Count > 0)
            {
                metrics.MarkedStale(made.Count);
                events.Nudge();
            }
            return made;
        }
        finally
        {
            _gate.Release();
        }
    }

    private static bool IsOverdue(HostRecord host, DateTimeOffset cutoff) =>
        host.State == HostStates.Healthy && (host.LastAttestedAt ?? host.EnrolledAt) < cutoff;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.SweepInterval, time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                try
                {
                    await SweepAsync(stoppingToken);
                }
                catch (Exception e) when (e is DbException or TimeoutException or IOException)
                {
                    // The store is unreachable for now: the next tick tries again.
                    SweepFailed(log, e.GetType().Name, e.Message);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    public override void Dispose()
    {
        _gate.Dispose();
        base.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "stale-host sweep failed: {Error}: {Detail}")]
    private static partial void SweepFailed(ILogger logger, string error, string detail);
}

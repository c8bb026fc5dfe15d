using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Rempart.Guardian.Api;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Ops;

/// <summary>Operations: metrics, audit verification and export, continuous attestation (stale hosts), webhooks.</summary>
public static class OpsRegistration
{
    /// <summary>Prometheus text exposition format, version 0.0.4.</summary>
    public const string MetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>Registers the operations services (called by GuardianServer).</summary>
    public static IServiceCollection AddGuardianOps(this IServiceCollection services)
    {
        services.AddSingleton(sp => OpsOptions.Load(sp.GetRequiredService<GuardianOptions>().DataDir));
        services.AddSingleton<OpsMetrics>();
        services.AddSingleton<WebhookSender>();
        services.AddSingleton<HostStateEvents>();
        services.AddSingleton<StaleHostMonitor>();
        services.AddSingleton<ApiObserver>();
        services.AddHostedService(sp => sp.GetRequiredService<WebhookSender>());
        services.AddHostedService(sp => sp.GetRequiredService<HostStateEvents>());
        services.AddHostedService(sp => sp.GetRequiredService<StaleHostMonitor>());
        services.AddSingleton<IStartupFilter, ApiObserverStartupFilter>();
        return services;
    }

    /// <summary>Maps the operations endpoints (called by Endpoints.Map).</summary>
    public static void MapOps(IEndpointRouteBuilder app)
    {
        // Metrics name hosts' states and the service's load: readers need a token, even on loopback.
        app.MapGet("/metrics", async (HttpContext http, AdminAuth auth, IGuardianStore store, OpsMetrics metrics) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Auditor);
            if (!ok)
            {
                return error!;
            }
            var hosts = (await store.ListHostsAsync(http.RequestAborted))
                .GroupBy(h => h.State, StringComparer.Ordinal)
                .ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
            return Results.Text(metrics.Render(hosts), MetricsContentType);
        });
        app.MapPost("/v1/ops/sweep", async (HttpContext http, AdminAuth auth, StaleHostMonitor monitor) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            return ok ? Results.Ok(new { marked = await monitor.SweepAsync(http.RequestAborted) }) : error!;
        });
        AuditEndpoints.Map(app);
    }
}

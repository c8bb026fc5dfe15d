using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Rempart.Guardian.Ops;

/// <summary>Operations: metrics, audit verification and export, continuous attestation (stale hosts), webhooks.</summary>
public static class OpsRegistration
{
    /// <summary>Registers the operations services (called by GuardianServer).</summary>
    public static IServiceCollection AddGuardianOps(this IServiceCollection services) => services;

    /// <summary>Maps the operations endpoints (called by Endpoints.Map).</summary>
    public static void MapOps(IEndpointRouteBuilder app)
    {
    }
}

using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Rempart.Host.Agent;
using Rempart.Host.Guardian;
using Rempart.Host.Keys;
using Rempart.KeyProtection;

namespace Rempart.AgentService;

/// <summary>
/// The host agent service: the attestation loop in the background and a local API on a unix
/// socket that only root can open (the socket is 0600 in a 0700 folder). No TCP listener.
/// </summary>
public static class AgentServer
{
    public static WebApplication Build(HostAgentOptions options, string socketPath, VmHostOptions? vmOptions = null)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(socketPath))!;
        Directory.CreateDirectory(dir);
        File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        if (File.Exists(socketPath))
        {
            File.Delete(socketPath); // a stale socket of a previous run
        }
        var agent = new HostAgent(options);
        var vms = new VmManager(vmOptions ?? VmHostOptions.Under(options.DataDir), agent.ReleaseAsync,
            new AgentAuditLog(Path.Combine(options.DataDir, "audit.jsonl")))
        {
            MigrationHost = agent,
        };
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddJsonConsole();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.AddSingleton(agent);
        builder.Services.AddSingleton(vms);
        builder.Services.AddHostedService<AttestationLoop>();
        builder.Services.AddHostedService<MigrationListener>();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = 1 << 20;
            k.ListenUnixSocket(socketPath);
        });
        var app = builder.Build();
        app.Lifetime.ApplicationStarted.Register(() => File.SetUnixFileMode(socketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite));
        app.Lifetime.ApplicationStarted.Register(() => _ = vms.ReattachAllAsync(app.Lifetime.ApplicationStopping));
        app.Lifetime.ApplicationStopped.Register(() =>
        {
            vms.DisposeAsync().AsTask().GetAwaiter().GetResult(); // closes QMP connections; VMs keep running
            agent.Dispose();
        });
        app.UseExceptionHandler(e => e.Run(http =>
        {
            var error = http.Features.Get<Microsoft.AspNetCore.Diagnostics.IExceptionHandlerFeature>()?.Error;
            if (error is BadHttpRequestException or System.Text.Json.JsonException or null)
            {
                return Problem(http, "request.invalid", "the request could not be read", 400);
            }
            // Our exceptions' messages name files, ids and states, never key material.
            http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger("Rempart.Agent").LogError("{Path}: {Type}: {Message}", http.Request.Path, error.GetType().Name, error.Message);
            return Problem(http, "agent.internal", $"the agent failed: {error.GetType().Name}: {error.Message}", 500);
        }));

        app.MapGet("/v1/status", (HostAgent a) => Results.Ok(a.Status));
        app.MapPost("/v1/attest", async (HostAgent a, CancellationToken ct) =>
        {
            await a.AttestOnceAsync(ct);
            return Results.Ok(a.Status);
        });
        // Checks that this host can obtain a VM's key now: release, unwrap in the TPM, MAC check; the key is wiped.
        app.MapPost("/v1/keys/check", async (JsonObject body, HostAgent a, CancellationToken ct) =>
        {
            try
            {
                var (key, release) = await a.ReleaseAsync(body["keyProtector"]?.GetValue<string>() ?? "", ct);
                key.Dispose();
                return Results.Ok(new { verified = true, release.ReleaseId, release.VmId, release.KpId, release.AuditSeq, release.Shielding });
            }
            catch (HostAgentException e)
            {
                return Results.Problem(title: e.Id, detail: e.Message, statusCode: 409, type: "urn:rempart:problem:" + e.Id);
            }
            catch (GuardianException e)
            {
                return Results.Problem(title: e.Id, detail: e.Message, statusCode: 502, type: "urn:rempart:problem:" + e.Id);
            }
            catch (ReleaseUnwrapException e)
            {
                return Results.Problem(title: e.Id, detail: e.Message, statusCode: 409, type: "urn:rempart:problem:" + e.Id);
            }
            catch (KeyProtectorException e)
            {
                return Results.Problem(title: "agent." + e.Id, detail: e.Message, statusCode: 400, type: "urn:rempart:problem:agent." + e.Id);
            }
        });
        VmEndpoints.Map(app);
        VmSnapshotEndpoints.Map(app);
        return app;
    }

    private static Task Problem(HttpContext http, string id, string detail, int status) =>
        Results.Problem(title: id, detail: detail, statusCode: status, type: "urn:rempart:problem:" + id).ExecuteAsync(http);

    /// <summary>Live migrations into this host, when --migration-listen was given (VmManager.ListenForMigrationsAsync).</summary>
    private sealed class MigrationListener(VmManager vms) : BackgroundService
    {
        protected override Task ExecuteAsync(CancellationToken stoppingToken) => vms.ListenForMigrationsAsync(stoppingToken);
    }

    private sealed class AttestationLoop(HostAgent agent) : BackgroundService
    {
        protected override Task ExecuteAsync(CancellationToken stoppingToken) => agent.RunAsync(stoppingToken);
    }
}

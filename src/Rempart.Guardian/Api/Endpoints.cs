using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Rempart.Attestation.Protocol;
using Rempart.Guardian.Attestation;
using Rempart.Guardian.Enrolment;
using Rempart.Guardian.Storage;
using Rempart.Guardian.Tokens;

namespace Rempart.Guardian.Api;

/// <summary>The REST API. Host-facing endpoints need no credential (the TPM proofs are the credential); admin endpoints need a role.</summary>
public static class Endpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/healthz", () => Results.Ok(new { status = "ok" }));
        Ops.OpsRegistration.MapOps(app);
        PolicyEndpoints.Map(app);
        KeyEndpoints.Map(app);
        FabricEndpoints.Map(app);
        ReleaseEndpoints.Map(app);
        app.MapGet("/.well-known/jwks.json", (HealthTokens t) => Results.Json(t.Jwks()));

        app.MapPost("/v1/enrolments", async (EnrolmentRequest req, EnrolmentService svc, CancellationToken ct) =>
            await Guard(async () => Results.Ok(await svc.StartAsync(req, ct))));
        app.MapPost("/v1/enrolments/{id}/activate", async (string id, EnrolmentActivation act, EnrolmentService svc, CancellationToken ct) =>
            await Guard(async () => Results.Ok(await svc.ActivateAsync(id, act, ct))));
        app.MapPost("/v1/attestations/nonce", async (NonceRequest req, AttestationService svc, CancellationToken ct) =>
            await Guard(async () => Results.Ok(await svc.NonceAsync(req.HostId, ct))));
        app.MapPost("/v1/attestations", async (HttpContext http, AttestationService svc, CancellationToken ct) =>
                await Guard(async () => await EvidenceReader.ReadAsync(http.Request, ct) switch
                {
                    { Bytes: { } bytes } => Results.Ok(await svc.AttestAsync(bytes, ct)),
                    { Strings: { } strings } => Results.Ok(await svc.AttestAsync(strings, ct)),
                    { Error: var error } => error!,
                }))
            .Accepts<AttestationEvidence>("application/json")
            .Produces<AttestationResult>();

        app.MapPost("/v1/tokens/validate", async (JsonObject body, HealthTokens tokens, IGuardianStore store, TimeProvider time, CancellationToken ct) =>
        {
            var token = body["token"]?.GetValue<string>() ?? "";
            var claims = tokens.Validate(token, time.GetUtcNow(), out var reason);
            if (claims is null)
            {
                return Results.Ok(new { valid = false, reason });
            }
            var record = await store.GetTokenAsync(claims["jti"]!.GetValue<string>(), ct);
            if (record is null || record.RevokedAt is not null)
            {
                return Results.Ok(new { valid = false, reason = "token.revoked" });
            }
            var host = await store.GetHostAsync(record.HostId, ct);
            if (host is null || host.State != HostStates.Healthy)
            {
                return Results.Ok(new { valid = false, reason = "host.not-healthy" });
            }
            return Results.Ok(new { valid = true, reason = "", claims });
        });

        app.MapGet("/v1/hosts", async (HttpContext http, AdminAuth auth, IGuardianStore store) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Auditor);
            return ok ? Results.Ok((await store.ListHostsAsync(http.RequestAborted)).Select(HostView)) : error!;
        });
        app.MapGet("/v1/hosts/{id}", async (string id, HttpContext http, AdminAuth auth, IGuardianStore store) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Auditor);
            if (!ok)
            {
                return error!;
            }
            var host = await store.GetHostAsync(id, http.RequestAborted);
            return host is null ? Problems.Of("host.unknown", $"no host {id}", 404) : Results.Ok(HostView(host));
        });
        app.MapPost("/v1/hosts/{id}/approve", async (string id, JsonObject body, HttpContext http, AdminAuth auth, IGuardianStore store, Audit audit) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            var groupName = body["group"]?.GetValue<string>() ?? "";
            var host = await store.GetHostAsync(id, http.RequestAborted);
            if (host is null)
            {
                return Problems.Of("host.unknown", $"no host {id}", 404);
            }
            if (await store.GetGroupAsync(groupName, http.RequestAborted) is null)
            {
                return Problems.Of("group.unknown", $"no host group '{groupName}': create it first", 404);
            }
            var updated = host with { State = host.State == HostStates.Pending ? HostStates.Approved : host.State, Group = groupName };
            await store.UpdateHostAsync(updated, http.RequestAborted);
            await audit.WriteAsync("host.approved", id, new { group = groupName }, http.RequestAborted);
            return Results.Ok(HostView(updated));
        });
        app.MapPost("/v1/hostgroups", async (JsonObject body, HttpContext http, AdminAuth auth, IGuardianStore store, Audit audit, TimeProvider time) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            var name = body["name"]?.GetValue<string>() ?? "";
            if (name.Length is 0 or > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            {
                return Problems.Of("group.name", "a group name is 1-64 letters, digits, '-' or '_'");
            }
            // Saving an existing group again keeps its policy (assigned separately).
            var existing = await store.GetGroupAsync(name, http.RequestAborted);
            var group = new HostGroupRecord(name, body["description"]?.GetValue<string>() ?? "", body["approveEkIssuer"]?.GetValue<string>(), existing?.PolicyId, time.GetUtcNow());
            await store.UpsertGroupAsync(group, http.RequestAborted);
            await audit.WriteAsync("group.saved", name, new { group.ApproveEkIssuer }, http.RequestAborted);
            return Results.Ok(group);
        });
        app.MapGet("/v1/hostgroups", async (HttpContext http, AdminAuth auth, IGuardianStore store) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Auditor);
            return ok ? Results.Ok(await store.ListGroupsAsync(http.RequestAborted)) : error!;
        });
    }

    private static object HostView(HostRecord h) => new
    {
        id = h.Id,
        hostname = h.Hostname,
        state = h.State,
        group = h.Group,
        akName = h.AkName,
        enrolledAt = h.EnrolledAt,
        lastAttestedAt = h.LastAttestedAt,
        lastStatus = h.LastStatus,
        resetCount = h.LastResetCount,
    };

    private static async Task<IResult> Guard(Func<Task<IResult>> action)
    {
        try
        {
            return await action();
        }
        catch (EnrolmentException e)
        {
            return Problems.Of(e.Id, e.Message, Problems.StatusFor(e.Id));
        }
    }
}

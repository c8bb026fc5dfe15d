using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Rempart.Host.Agent;

namespace Rempart.AgentService;

/// <summary>
/// Snapshots on the agent's local API (root-only unix socket). Taking and restoring answer in NDJSON
/// like start: <c>{"progress": "…"}</c> lines, then <c>{"snapshot": {…}}</c> or <c>{"status": {…}}</c>,
/// or <c>{"error": {"id", "detail", "status"}}</c>. List and delete answer JSON, errors as RFC 9457 problems
/// whose title is the stable id.
/// </summary>
internal static class VmSnapshotEndpoints
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public static void Map(WebApplication app)
    {
        app.MapGet("/v1/vms/{name}/snapshots", (string name, VmManager m) => VmEndpoints.Guard(() => Results.Json(m.Snapshots(name), Json)));
        app.MapPost("/v1/vms/{name}/snapshots", (HttpContext http, string name, JsonObject? body, VmManager m) =>
        {
            string? id;
            try
            {
                id = body?["name"]?.GetValue<string>();
            }
            catch (InvalidOperationException e)
            {
                return Results.Problem(title: "vm.request", detail: e.Message, statusCode: 400, type: "urn:rempart:problem:vm.request").ExecuteAsync(http);
            }
            return VmEndpoints.StreamAsync(http, "snapshot", (p, ct) => m.SnapshotAsync(name, id, p, ct));
        });
        app.MapPost("/v1/vms/{name}/snapshots/{id}/restore", (HttpContext http, string name, string id, VmManager m) =>
            VmEndpoints.StreamAsync(http, "status", (p, ct) => m.RestoreAsync(name, id, p, ct)));
        app.MapPost("/v1/vms/{name}/migrate", (HttpContext http, string name, JsonObject? body, VmManager m) =>
        {
            string? to;
            try
            {
                to = body?["to"]?.GetValue<string>();
            }
            catch (InvalidOperationException e)
            {
                return Results.Problem(title: "vm.request", detail: e.Message, statusCode: 400, type: "urn:rempart:problem:vm.request").ExecuteAsync(http);
            }
            return VmEndpoints.StreamAsync(http, "migration", (p, ct) => m.MigrateAsync(name, to ?? "", p, ct));
        });
        app.MapPost("/v1/vms/{name}/export", async (string name, JsonObject? body, VmManager m, CancellationToken ct) =>
        {
            try
            {
                return Results.Json(await m.ExportAsync(name, Text(body, "path"), ct), Json);
            }
            catch (VmOperationException e)
            {
                return VmEndpoints.Problem(e);
            }
        });
        app.MapDelete("/v1/vms/{name}", async (string name, VmManager m, CancellationToken ct) =>
        {
            try
            {
                await m.DeleteAsync(name, ct);
                return Results.Json(new { deleted = name }, Json);
            }
            catch (VmOperationException e)
            {
                return VmEndpoints.Problem(e);
            }
        });
        app.MapPost("/v1/vms/import", async (JsonObject? body, VmManager m, CancellationToken ct) =>
        {
            try
            {
                return Results.Json(await m.ImportAsync(Text(body, "path"), ct), Json);
            }
            catch (VmOperationException e)
            {
                return VmEndpoints.Problem(e);
            }
        });
        app.MapDelete("/v1/vms/{name}/snapshots/{id}", async (string name, string id, VmManager m, CancellationToken ct) =>
        {
            try
            {
                await m.DeleteSnapshotAsync(name, id, ct);
                return Results.Json(new { deleted = id }, Json);
            }
            catch (VmOperationException e)
            {
                return VmEndpoints.Problem(e);
            }
        });
    }

    private static string Text(JsonObject? body, string key) =>
        body?[key] is JsonValue v && v.TryGetValue<string>(out var s) && s.Length > 0 ? s : throw new VmOperationException("vm.request", $"'{key}' is missing");
}

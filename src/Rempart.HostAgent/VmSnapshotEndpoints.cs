using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Rempart.Host.Agent;

namespace Rempart.AgentService;

/// <summary>
/// Snapshots on the agent's local API (root-only unix socket). Taking and restoring answer in NDJSON
/// like start: <c>{"progress": "…"}</c> lines, then <c>{"snapshot": {…}}</c> or <c>{"status": {…}}</c>,
/// or <c>{"error": {"id", "detail"}}</c>. List and delete answer JSON, errors as RFC 9457 problems
/// whose title is the stable id.
/// </summary>
internal static class VmSnapshotEndpoints
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public static void Map(WebApplication app)
    {
        app.MapGet("/v1/vms/{name}/snapshots", (string name, VmManager m) => Guard(() => Results.Json(m.Snapshots(name), Json)));
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
            return StreamAsync(http, "snapshot", (p, ct) => m.SnapshotAsync(name, id, p, ct));
        });
        app.MapPost("/v1/vms/{name}/snapshots/{id}/restore", (HttpContext http, string name, string id, VmManager m) =>
            StreamAsync(http, "status", (p, ct) => m.RestoreAsync(name, id, p, ct)));
        app.MapDelete("/v1/vms/{name}/snapshots/{id}", async (string name, string id, VmManager m, CancellationToken ct) =>
        {
            try
            {
                await m.DeleteSnapshotAsync(name, id, ct);
                return Results.Json(new { deleted = id }, Json);
            }
            catch (VmOperationException e)
            {
                return Problem(e);
            }
        });
    }

    private static IResult Guard(Func<IResult> work)
    {
        try
        {
            return work();
        }
        catch (VmOperationException e)
        {
            return Problem(e);
        }
    }

    private static IResult Problem(VmOperationException e) => e.Id switch
    {
        "vm.snapshot.not-found" => Results.Problem(title: e.Id, detail: e.Message, statusCode: 404, type: "urn:rempart:problem:" + e.Id),
        "vm.snapshot.name" => Results.Problem(title: e.Id, detail: e.Message, statusCode: 400, type: "urn:rempart:problem:" + e.Id),
        "vm.snapshot.format" => Results.Problem(title: e.Id, detail: e.Message, statusCode: 422, type: "urn:rempart:problem:" + e.Id),
        _ => VmEndpoints.Problem(e),
    };

    private static async Task StreamAsync<T>(HttpContext http, string resultName, Func<IProgress<string>, CancellationToken, Task<T>> work)
    {
        http.Response.ContentType = "application/x-ndjson";
        var gate = new SemaphoreSlim(1, 1);
        async Task Line(JsonObject o)
        {
            await gate.WaitAsync();
            try
            {
                await http.Response.WriteAsync(o.ToJsonString() + "\n");
                await http.Response.Body.FlushAsync();
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
            {
                // the client went away; the operation carries on and is audited
            }
            finally
            {
                gate.Release();
            }
        }
        var progress = new SyncProgress(m => Line(new JsonObject { ["progress"] = m }).GetAwaiter().GetResult());
        try
        {
            // Not the request's token: a client that disconnects must not leave a half-taken snapshot or a paused guest.
            var result = await work(progress, CancellationToken.None);
            await Line(new JsonObject { [resultName] = JsonSerializer.SerializeToNode(result, Json) });
        }
        catch (VmOperationException e)
        {
            await Line(new JsonObject { ["error"] = new JsonObject { ["id"] = e.Id, ["detail"] = e.Message } });
        }
    }

    /// <summary>Reports on the caller's thread, in order.</summary>
    private sealed class SyncProgress(Action<string> report) : IProgress<string>
    {
        public void Report(string value) => report(value);
    }
}

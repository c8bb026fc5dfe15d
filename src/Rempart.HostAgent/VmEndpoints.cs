using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Rempart.Host.Agent;
using Rempart.Host.Vm;

namespace Rempart.AgentService;

/// <summary>
/// The VM half of the agent's local API (root-only unix socket). Long operations (create, start)
/// answer in NDJSON: <c>{"progress": "…"}</c> lines as the work goes, then one
/// <c>{"status": {…}}</c> or <c>{"error": {"id", "detail", "status"}}</c> line. Errors of quick operations
/// are RFC 9457 problems whose title is the stable id.
/// </summary>
internal static class VmEndpoints
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public static void Map(WebApplication app)
    {
        app.MapGet("/v1/vms", (VmManager m) => Guard(() => Results.Json(m.List(), Json)));
        app.MapGet("/v1/vms/{name}", (string name, VmManager m) => Guard(() => Results.Json(m.Status(name), Json)));
        app.MapGet("/v1/audit", (VmManager m) => Results.Json(new { records = m.Audit.Read(), brokenAt = m.Audit.Verify() }, Json));

        app.MapPost("/v1/vms", async (HttpContext http, JsonObject body, VmManager m) =>
        {
            VmCreateRequest request;
            try
            {
                request = ParseCreate(body);
            }
            catch (FormatException e)
            {
                await Results.Problem(title: "vm.request", detail: e.Message, statusCode: 400, type: "urn:rempart:problem:vm.request").ExecuteAsync(http);
                return;
            }
            await StreamAsync(http, "status", (p, ct) => m.CreateAsync(request, p, ct));
        });
        app.MapPost("/v1/vms/{name}/start", (HttpContext http, string name, JsonObject? body, VmManager m) =>
        {
            var accept = body?["acceptRestoredState"] is JsonValue v && v.TryGetValue(out bool b) && b;
            return StreamAsync(http, "status", (p, ct) => m.StartAsync(name, accept, p, ct));
        });
        app.MapPost("/v1/vms/{name}/stop", async (string name, JsonObject? body, VmManager m, CancellationToken ct) =>
        {
            var force = body?["force"]?.GetValue<bool>() ?? false;
            var grace = TimeSpan.FromSeconds(Math.Clamp(body?["graceSeconds"]?.GetValue<int>() ?? 60, 0, 3600));
            try
            {
                return Results.Json(await m.StopAsync(name, force, grace, ct), Json);
            }
            catch (VmOperationException e)
            {
                return Problem(e);
            }
        });
        // The console is relayed by the agent on the upgraded connection (ConsoleClient, ConsoleSession):
        // the client never gets QEMU's serial socket, so the whole session is seen and recorded.
        app.MapPost("/v1/vms/{name}/console", async (HttpContext http, string name, VmManager m) =>
        {
            var upgrade = http.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpUpgradeFeature>();
            if (upgrade is not { IsUpgradableRequest: true }
                || !string.Equals(http.Request.Headers.Upgrade.ToString(), ConsoleClient.Protocol, StringComparison.OrdinalIgnoreCase))
            {
                http.Response.Headers.Upgrade = ConsoleClient.Protocol;
                await Results.Problem(title: "vm.console.upgrade", statusCode: 426, type: "urn:rempart:problem:vm.console.upgrade",
                    detail: $"the console is a byte stream on this connection: send 'Connection: Upgrade' and 'Upgrade: {ConsoleClient.Protocol}' (rempart vm console does)").ExecuteAsync(http);
                return;
            }
            var who = http.Request.Query["user"].ToString();
            if (who.Length is 0 or > 64 || who.Any(char.IsControl))
            {
                who = "unknown";
            }
            var peer = PeerCredentials.Of(http.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionSocketFeature>()?.Socket);
            ConsoleSession session;
            try
            {
                session = await m.OpenConsoleAsync(name, who, peer, http.RequestAborted);
            }
            catch (VmOperationException e)
            {
                await Problem(e).ExecuteAsync(http);
                return;
            }
            await using (session)
            {
                http.Response.Headers.Upgrade = ConsoleClient.Protocol;
                var stream = await upgrade.UpgradeAsync();
                await session.RelayAsync(stream, m.Stopping);
            }
        });
        app.MapPost("/v1/vms/{name}/qmp", async (string name, JsonObject body, VmManager m, CancellationToken ct) =>
        {
            try
            {
                var command = body["command"]?.GetValue<string>() ?? throw new FormatException("command is missing");
                var result = await m.QmpAsync(name, command, body["arguments"] as JsonObject, ct);
                return Results.Json(new { @return = result }, Json);
            }
            catch (VmOperationException e)
            {
                return Problem(e);
            }
            catch (Exception e) when (e is FormatException or InvalidOperationException)
            {
                return Results.Problem(title: "vm.request", detail: e.Message, statusCode: 400, type: "urn:rempart:problem:vm.request");
            }
            catch (Host.Qemu.QmpException e)
            {
                return Results.Problem(title: "qmp.error", detail: e.Message, statusCode: 409, type: "urn:rempart:problem:qmp.error");
            }
        });
    }

    internal static IResult Guard(Func<IResult> work)
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

    public static IResult Problem(VmOperationException e) =>
        Results.Problem(title: e.Id, detail: e.Message, statusCode: StatusOf(e.Id), type: "urn:rempart:problem:" + e.Id);

    /// <summary>The HTTP status of an operation's error id; the NDJSON error line carries it too, so clients never guess from id prefixes.</summary>
    internal static int StatusOf(string id) => id switch
    {
        "vm.not-found" or "vm.snapshot.not-found" => 404,
        "vm.exists" or "vm.running" or "vm.not-running" or "agent.no-token" => 409,
        "vm.console.shielded" or "kp.integrity" => 403,
        "vm.console.busy" or "vm.state.rollback" => 409,
        "vm.console.connect" => 502,
        "vm.name" or "vm.request" or "vm.image.missing" or "vm.snapshot.name" or "vm.migrate.target" => 400,
        "vm.migrate.connect" => 502,
        // The peer is not the host the Guardian vouched for (or someone sits in the middle): a refusal, not a fault.
        "migration.channel.proof" or "migration.channel.confirm" => 403,
        "vm.busy" or "vm.export.exists" => 409,
        "vm.import.missing" => 404,
        _ when id.StartsWith("vm.import.", StringComparison.Ordinal) => 422,
        _ when id.StartsWith("migration.", StringComparison.Ordinal) && !id.StartsWith("migration.channel.", StringComparison.Ordinal) => 403,
        "vm.snapshot.failed" or "vm.snapshot.migration" or "vm.snapshot.copy" => 500,
        _ when id.StartsWith("qmp.refused", StringComparison.Ordinal) || id.StartsWith("release.", StringComparison.Ordinal) => 403,
        _ when id.StartsWith("bundle.", StringComparison.Ordinal) || id.StartsWith("snapshot.", StringComparison.Ordinal) || id == "vm.snapshot.format" => 422,
        _ when id.StartsWith("vm.snapshot.", StringComparison.Ordinal) => 409,
        _ => 500,
    };

    /// <summary>
    /// Answers a long operation in NDJSON: progress lines, then <c>{resultName: …}</c> or
    /// <c>{"error": {"id", "detail", "status"}}</c>. The work runs to its end even if the client goes away.
    /// </summary>
    internal static async Task StreamAsync<T>(HttpContext http, string resultName, Func<IProgress<string>, CancellationToken, Task<T>> work)
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
            // Not the request's token: a client that disconnects must not leave half a VM, a half-taken snapshot or a paused guest behind.
            var result = await work(progress, CancellationToken.None);
            await Line(new JsonObject { [resultName] = JsonSerializer.SerializeToNode(result, Json) });
        }
        catch (VmOperationException e)
        {
            await Line(new JsonObject { ["error"] = new JsonObject { ["id"] = e.Id, ["detail"] = e.Message, ["status"] = StatusOf(e.Id) } });
        }
    }

    private static VmCreateRequest ParseCreate(JsonObject b)
    {
        string Str(string k) => b[k]?.GetValue<string>() ?? throw new FormatException($"{k} is missing");
        int Int(string k, int def) => b[k] is null ? def : b[k]!.GetValue<int>();
        var disks = new List<(string, string?, string, long)>();
        foreach (var d in b["disks"]?.AsArray() ?? [])
        {
            var id = d?["id"]?.GetValue<string>() ?? throw new FormatException("a disk has no id");
            var image = d["image"]?.GetValue<string>();
            var size = d["sizeBytes"]?.GetValue<long>() ?? 0;
            disks.Add((id, image, d["format"]?.GetValue<string>() ?? "raw", size));
        }
        var sb = (b["secureBoot"]?.GetValue<string>() ?? "snakeoil") switch
        {
            "snakeoil" => SecureBootTemplate.Snakeoil,
            "microsoft" => SecureBootTemplate.Microsoft,
            var t => throw new FormatException($"secureBoot '{t}': snakeoil or microsoft"),
        };
        return new VmCreateRequest(Str("name"), Str("keyProtector"), Str("image"), b["imageFormat"]?.GetValue<string>() ?? "raw",
            Int("memoryMiB", 512), Int("cpus", 1), sb, disks);
    }

    /// <summary>Reports on the caller's thread (Progress&lt;T&gt; would post them out of order).</summary>
    private sealed class SyncProgress(Action<string> report) : IProgress<string>
    {
        public void Report(string value) => report(value);
    }
}

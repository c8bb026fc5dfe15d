using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Rempart.Attestation.EventLog;
using Rempart.Attestation.Policy;
using Rempart.Guardian.Storage;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;

namespace Rempart.Guardian.Api;

/// <summary>
/// Policies (DESIGN.md §5): versioned documents, assigned to host groups, tested against the
/// fleet's stored evidence before they are enforced ("what would fail?"), and baselines captured
/// from a reference host.
/// </summary>
public static class PolicyEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/policies", async (JsonObject body, HttpContext http, AdminAuth auth, IGuardianStore store, Audit audit, TimeProvider time) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            var text = body["document"]?.GetValue<string>() ?? "";
            var parsed = PolicyDocument.Parse(text);
            if (parsed.Document is not { } doc)
            {
                return Problems.Of("policy.invalid", string.Join("; ", parsed.Errors));
            }
            if (await store.GetPolicyAsync(doc.Id, doc.Version, http.RequestAborted) is not null)
            {
                return Problems.Of("policy.version-exists", $"policy {doc.Id} version {doc.Version} exists: released versions never change, raise the version", 409);
            }
            var mode = doc.Mode == PolicyMode.Audit ? "audit" : "enforce";
            await store.InsertPolicyAsync(new PolicyRecord(doc.Id, doc.Version, mode, text, time.GetUtcNow()), http.RequestAborted);
            await audit.WriteAsync("policy.saved", doc.Id, new { doc.Version, mode, rules = doc.Rules.Count }, http.RequestAborted);
            return Results.Ok(new { id = doc.Id, version = doc.Version, mode });
        });

        app.MapGet("/v1/policies", async (HttpContext http, AdminAuth auth, IGuardianStore store) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Auditor);
            return ok ? Results.Ok(await store.ListPoliciesAsync(http.RequestAborted)) : error!;
        });

        app.MapPost("/v1/hostgroups/{name}/policy", async (string name, JsonObject body, HttpContext http, AdminAuth auth, IGuardianStore store, Audit audit) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            var group = await store.GetGroupAsync(name, http.RequestAborted);
            if (group is null)
            {
                return Problems.Of("group.unknown", $"no host group '{name}'", 404);
            }
            var policyId = body["policyId"]?.GetValue<string>();
            if (policyId is not null && await store.GetPolicyAsync(policyId, null, http.RequestAborted) is null)
            {
                return Problems.Of("policy.missing", $"no policy '{policyId}'", 404);
            }
            await store.UpsertGroupAsync(group with { PolicyId = policyId }, http.RequestAborted);
            await audit.WriteAsync("group.policy", name, new { policyId }, http.RequestAborted);
            return Results.Ok(new { name, policyId });
        });

        // What would fail? A draft evaluated against every host's last verified evidence (re-verified here).
        app.MapPost("/v1/policies/test", async (JsonObject body, HttpContext http, AdminAuth auth, IGuardianStore store) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Auditor);
            if (!ok)
            {
                return error!;
            }
            var parsed = PolicyDocument.Parse(body["document"]?.GetValue<string>() ?? "");
            if (parsed.Document is not { } doc)
            {
                return Problems.Of("policy.invalid", string.Join("; ", parsed.Errors));
            }
            var only = body["hostId"]?.GetValue<string>();
            var results = new JsonArray();
            foreach (var host in await store.ListHostsAsync(http.RequestAborted))
            {
                if (only is not null && host.Id != only)
                {
                    continue;
                }
                var claims = await ClaimsAsync(store, host, http.RequestAborted);
                var entry = new JsonObject { ["hostId"] = host.Id, ["hostname"] = host.Hostname };
                if (claims.Claims is null)
                {
                    entry["error"] = claims.Error;
                }
                else
                {
                    entry["result"] = PolicyEvaluator.Evaluate(doc, claims.Claims).ToJson();
                }
                results.Add(entry);
            }
            return Results.Ok(new JsonObject { ["policy"] = doc.Id, ["version"] = doc.Version, ["hosts"] = results });
        });

        app.MapPost("/v1/policies/baseline", async (JsonObject body, HttpContext http, AdminAuth auth, IGuardianStore store) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            var hostId = body["hostId"]?.GetValue<string>() ?? "";
            var id = body["id"]?.GetValue<string>() ?? "baseline";
            var host = await store.GetHostAsync(hostId, http.RequestAborted);
            if (host is null)
            {
                return Problems.Of("host.unknown", $"no host {hostId}", 404);
            }
            var claims = await ClaimsAsync(store, host, http.RequestAborted);
            if (claims.Claims is null)
            {
                return Problems.Of("evidence.unavailable", claims.Error!);
            }
            return Results.Text(PolicyBaseline.Capture(claims.Claims, id).ToYaml(), "application/yaml");
        });
    }

    /// <summary>Claims from a host's stored evidence, verified again (quote with the enrolled AK, then replay).</summary>
    private static async Task<(PolicyClaims? Claims, string? Error)> ClaimsAsync(IGuardianStore store, HostRecord host, CancellationToken ct)
    {
        var ev = await store.GetLatestEvidenceAsync(host.Id, ct);
        if (ev is null || ev.Quote is null || ev.QuoteSignature is null || ev.Nonce is null)
        {
            return (null, "no verified evidence stored for this host yet");
        }
        var pcrs = JsonSerializer.Deserialize<Dictionary<string, Dictionary<string, string>>>(ev.PcrsJson) ?? [];
        byte[]? Value(TpmAlgId bank, int pcr) =>
            pcrs.TryGetValue(TpmHash.ToName(bank), out var m) && m.TryGetValue(pcr.ToString(System.Globalization.CultureInfo.InvariantCulture), out var hex) ? Convert.FromHexString(hex) : null;
        using var ak = new VerificationKey(TpmtPublic.ParseSized(host.AkPublic));
        var quoted = QuotedPcrs.Verify(ak, ev.Quote, TpmtSignature.Parse(ev.QuoteSignature), ev.Nonce, Value, out var result);
        if (quoted is null)
        {
            return (null, "stored evidence no longer verifies: " + result);
        }
        var verification = EventLogVerifier.Verify(EventLogParser.Parse(ev.EventLog), quoted);
        return (PolicyClaims.From(verification, quoted, null), null);
    }
}

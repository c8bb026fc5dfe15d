using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Rempart.Guardian.Storage;
using Rempart.Tpm;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;

namespace Rempart.Guardian.Api;

/// <summary>
/// Fabric administration beyond enrol/approve: removing a host, changing and deleting host
/// groups, allowing TPMs that have no EK certificate, and API tokens for the other roles.
/// Every change is an audit record.
/// </summary>
public static class FabricEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapDelete("/v1/hosts/{id}", async (string id, HttpContext http, AdminAuth auth, IGuardianStore store, Audit audit, TimeProvider time) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            var host = await store.GetHostAsync(id, http.RequestAborted);
            if (host is null || host.State == HostStates.Removed)
            {
                return Problems.Of("host.unknown", $"no host {id}", 404);
            }
            // Removed, not deleted: the record keeps the audit trail readable; the TPM may enrol again.
            await store.UpdateHostAsync(host with { State = HostStates.Removed, Group = null, LastStatus = "removed" }, http.RequestAborted);
            var revoked = await store.RevokeHostTokensAsync(id, time.GetUtcNow(), http.RequestAborted);
            await audit.WriteAsync("host.removed", id, new { from = host.State, group = host.Group, revokedTokens = revoked }, http.RequestAborted);
            return Results.Ok(new { id, state = HostStates.Removed, revokedTokens = revoked });
        });

        app.MapPatch("/v1/hostgroups/{name}", async (string name, JsonObject body, HttpContext http, AdminAuth auth, IGuardianStore store, Audit audit) =>
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
            foreach (var key in body.Select(p => p.Key))
            {
                if (key is not ("description" or "approveEkIssuer"))
                {
                    return Problems.Of("group.field", $"'{key}' cannot be changed here (description, approveEkIssuer; the policy with POST /v1/hostgroups/{name}/policy)");
                }
            }
            var updated = group with
            {
                Description = body.ContainsKey("description") ? body["description"]?.GetValue<string>() ?? "" : group.Description,
                ApproveEkIssuer = body.ContainsKey("approveEkIssuer") ? NullIfEmpty(body["approveEkIssuer"]?.GetValue<string>()) : group.ApproveEkIssuer,
            };
            await store.UpsertGroupAsync(updated, http.RequestAborted);
            await audit.WriteAsync("group.saved", name, new { updated.Description, updated.ApproveEkIssuer }, http.RequestAborted);
            return Results.Ok(updated);
        });

        app.MapDelete("/v1/hostgroups/{name}", async (string name, HttpContext http, AdminAuth auth, IGuardianStore store, Audit audit) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            if (await store.GetGroupAsync(name, http.RequestAborted) is null)
            {
                return Problems.Of("group.unknown", $"no host group '{name}'", 404);
            }
            var members = (await store.ListHostsAsync(http.RequestAborted)).Count(h => h.Group == name && h.State != HostStates.Removed);
            if (members > 0)
            {
                return Problems.Of("group.not-empty", $"host group '{name}' still has {members} host(s): approve them into another group or remove them first", 409);
            }
            await store.DeleteGroupAsync(name, http.RequestAborted);
            await audit.WriteAsync("group.deleted", name, new { }, http.RequestAborted);
            return Results.Ok(new { name, deleted = true });
        });

        MapEkAllowList(app);
        MapApiTokens(app);
    }

    private static void MapEkAllowList(IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/ek-allowlist", async (JsonObject body, HttpContext http, AdminAuth auth, IGuardianStore store, Audit audit, TimeProvider time) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            byte[] bytes;
            TpmtPublic ek;
            try
            {
                bytes = Convert.FromBase64String(body["ekPublic"]?.GetValue<string>() ?? "");
                ek = TpmtPublic.ParseSized(bytes);
            }
            catch (Exception e) when (e is FormatException or TpmFormatException)
            {
                return Problems.Of("ek.format", "ekPublic must be a base64 TPM2B_PUBLIC (as written by 'rempart tpm ek --format tpm2b' or tpm2_createek -u): " + e.Message);
            }
            if (ek.Type is not (TpmAlgId.Rsa or TpmAlgId.Ecc) || !ek.Has(TpmaObject.Restricted | TpmaObject.Decrypt | TpmaObject.FixedTpm | TpmaObject.FixedParent))
            {
                return Problems.Of("ek.attributes", "this is not an endorsement key: an EK is an RSA or ECC fixedTPM, fixedParent, restricted decryption key");
            }
            var comment = body["comment"]?.GetValue<string>() ?? "";
            if (comment.Length > 256)
            {
                return Problems.Of("ek.comment", "the comment is at most 256 characters");
            }
            var name = Convert.ToHexStringLower(ek.Name());
            var record = new EkAllowRecord(name, bytes, comment, time.GetUtcNow());
            await store.UpsertEkAllowAsync(record, http.RequestAborted);
            await audit.WriteAsync("ek.allowed", name, new { comment, type = ek.Type.ToString() }, http.RequestAborted);
            return Results.Ok(AllowView(record));
        });
        app.MapGet("/v1/ek-allowlist", async (HttpContext http, AdminAuth auth, IGuardianStore store) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Auditor);
            return ok ? Results.Ok((await store.ListEkAllowsAsync(http.RequestAborted)).Select(AllowView)) : error!;
        });
        app.MapDelete("/v1/ek-allowlist/{name}", async (string name, HttpContext http, AdminAuth auth, IGuardianStore store, Audit audit) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            if (!await store.DeleteEkAllowAsync(name, http.RequestAborted))
            {
                return Problems.Of("ek.unknown", $"no allowed EK named {name}", 404);
            }
            await audit.WriteAsync("ek.disallowed", name, new { }, http.RequestAborted);
            return Results.Ok(new { ekName = name, allowed = false });
        });
    }

    private static void MapApiTokens(IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/apitokens", async (JsonObject body, HttpContext http, AdminAuth auth, IGuardianStore store, Audit audit, TimeProvider time) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            var name = body["name"]?.GetValue<string>() ?? "";
            var role = body["role"]?.GetValue<string>() ?? "";
            if (name.Length is 0 or > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            {
                return Problems.Of("apitoken.name", "a token name is 1-64 letters, digits, '-', '_' or '.'");
            }
            if (role is not (Roles.FabricAdmin or Roles.Tenant or Roles.Auditor))
            {
                return Problems.Of("apitoken.role", $"role must be {Roles.FabricAdmin}, {Roles.Tenant} or {Roles.Auditor}");
            }
            var token = "rpt_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
            var id = "tok-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
            var record = new ApiTokenRecord(id, name, role, SHA256.HashData(Encoding.UTF8.GetBytes(token)), time.GetUtcNow());
            await store.InsertApiTokenAsync(record, http.RequestAborted);
            await audit.WriteAsync("apitoken.created", id, new { name, role }, http.RequestAborted);
            // The token is shown once; only its hash is kept.
            return Results.Ok(new { id, name, role, createdAt = record.CreatedAt, token });
        });
        app.MapGet("/v1/apitokens", async (HttpContext http, AdminAuth auth, IGuardianStore store) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Auditor);
            return ok
                ? Results.Ok((await store.ListApiTokensAsync(http.RequestAborted)).Select(t => new { id = t.Id, name = t.Name, role = t.Role, createdAt = t.CreatedAt }))
                : error!;
        });
        app.MapDelete("/v1/apitokens/{id}", async (string id, HttpContext http, AdminAuth auth, IGuardianStore store, Audit audit) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            var all = await store.ListApiTokensAsync(http.RequestAborted);
            var target = all.FirstOrDefault(t => t.Id == id);
            if (target is null)
            {
                return Problems.Of("apitoken.unknown", $"no API token {id}", 404);
            }
            if (target.Role == Roles.FabricAdmin && all.Count(t => t.Role == Roles.FabricAdmin) == 1)
            {
                return Problems.Of("apitoken.last-admin", "this is the last fabric-admin token: create another one before revoking it", 409);
            }
            await store.DeleteApiTokenAsync(id, http.RequestAborted);
            await audit.WriteAsync("apitoken.revoked", id, new { target.Name, target.Role }, http.RequestAborted);
            return Results.Ok(new { id, revoked = true });
        });
    }

    private static object AllowView(EkAllowRecord a) => new { ekName = a.EkName, comment = a.Comment, allowedAt = a.AllowedAt };

    private static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;
}

using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Rempart.Attestation.Protocol;
using Rempart.Guardian.Keys;
using Rempart.Guardian.Release;
using Rempart.Guardian.Storage;
using Rempart.KeyProtection;

namespace Rempart.Guardian.Api;

/// <summary>
/// Key protection endpoints: the Guardian's signed metadata (for tenants building key protectors
/// offline), key release to healthy hosts, and where a VM's key was released (from the audit log).
/// </summary>
public static class ReleaseEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/guardian/metadata", (IGuardianKeyProvider keys, GuardianOptions options, TimeProvider time) =>
            Results.Text(Metadata(keys, options, time).ToJson(), "application/json"));

        // Host-facing: the health token is the credential (TPM-backed), no API token.
        app.MapPost("/v1/releases", async (ReleaseRequest request, ReleaseService releases, CancellationToken ct) =>
        {
            try
            {
                return Results.Ok(await releases.ReleaseAsync(request, ct));
            }
            catch (ReleaseException e)
            {
                return Problems.Of(e.Id, e.Message, e.Status);
            }
        });
        // Live migration: a release to each end of it, under the same checks (MigrationEndpoints).
        MigrationEndpoints.Map(app);

        app.MapPost("/v1/keyprotectors/rewrap", async (JsonObject body, HttpContext http, AdminAuth auth, ReleaseService releases) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Tenant);
            if (!ok)
            {
                return error!;
            }
            try
            {
                var (kp, changed) = await releases.RewrapAsync(body["keyProtector"]?.GetValue<string>() ?? "", http.RequestAborted);
                return Results.Ok(new { changed, keyProtector = kp.ToJson() });
            }
            catch (ReleaseException e)
            {
                return Problems.Of(e.Id, e.Message, e.Status);
            }
            catch (KeyProviderException e)
            {
                return Problems.Of("rewrap.keys.unavailable", "the Guardian's key provider could not unwrap the key: " + e.Message, 503);
            }
        });

        app.MapGet("/v1/releases", async (string? vmId, HttpContext http, AdminAuth auth, IGuardianStore store) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Tenant, Roles.Auditor);
            if (!ok)
            {
                return error!;
            }
            if (string.IsNullOrEmpty(vmId))
            {
                return Problems.Of("release.vm-id", "give ?vmId=ID");
            }
            var subject = ReleaseService.Subject(vmId);
            var found = new JsonArray();
            for (long from = 1; ;)
            {
                var page = await store.ReadAuditAsync(from, 1000, http.RequestAborted);
                foreach (var r in page.Where(r => r.Subject == subject && r.Kind is ReleaseService.ReleasedKind or ReleaseService.RefusedKind))
                {
                    var data = JsonNode.Parse(r.DataJson)!.AsObject();
                    data["auditSeq"] = r.Seq;
                    data["at"] = r.At;
                    data["outcome"] = r.Kind == ReleaseService.ReleasedKind ? "released" : "refused";
                    found.Add(data);
                }
                if (page.Count < 1000)
                {
                    break;
                }
                from = page[^1].Seq + 1;
            }
            return Results.Ok(found);
        });
    }

    /// <summary>This Guardian's public identity and keys, signed by its token-signing key (through the provider).</summary>
    public static GuardianMetadata Metadata(IGuardianKeyProvider keys, GuardianOptions options, TimeProvider time) =>
        GuardianMetadata.Create(GuardianId(keys), options.Issuer, null,
            keys.EncryptionKeys.Where(k => k.Status != GuardianKeyStatus.Retired), keys.SigningPublicKey, time.GetUtcNow(), d => keys.SignEs256(d));

    /// <summary>A stable id: derived from the signing key, so it changes only with that key.</summary>
    public static string GuardianId(IGuardianKeyProvider keys) => "g-" + keys.SigningKid;
}

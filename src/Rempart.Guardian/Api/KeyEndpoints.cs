using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Rempart.Guardian.Keys;
using Rempart.KeyProtection;

namespace Rempart.Guardian.Api;

/// <summary>
/// The Guardian's keys (docs/guardian.md, "Keys and key providers"): list the public keys and their
/// status, rotate the encryption key, retire an old one once every key protector was re-wrapped.
/// Public keys and ids only: no route reveals or accepts key material.
/// </summary>
public static class KeyEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/keys", async (HttpContext http, AdminAuth auth, IGuardianKeyProvider keys) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Auditor);
            return ok ? Results.Ok(View(keys)) : error!;
        });

        app.MapPost("/v1/keys/rotate", async (HttpContext http, AdminAuth auth, IGuardianKeyProvider keys, Audit audit) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            var previous = keys.ActiveKey.Kid;
            var created = await Task.Run(keys.Rotate, http.RequestAborted);
            await audit.WriteAsync("keys.rotated", created.Kid, new { provider = keys.Kind, previous }, http.RequestAborted);
            return Results.Ok(KeyView(created));
        });

        app.MapPost("/v1/keys/{kid}/retire", async (string kid, HttpContext http, AdminAuth auth, IGuardianKeyProvider keys, Audit audit) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin);
            if (!ok)
            {
                return error!;
            }
            GuardianKeyInfo retired;
            try
            {
                retired = keys.Retire(kid);
            }
            catch (KeyProviderException e) when (e.Id is "keys.unknown-kid" or "keys.retire.active")
            {
                return Problems.Of(e.Id, e.Message, e.Id == "keys.unknown-kid" ? StatusCodes.Status404NotFound : StatusCodes.Status409Conflict);
            }
            await audit.WriteAsync("keys.retired", kid, new { provider = keys.Kind }, http.RequestAborted);
            return Results.Ok(KeyView(retired));
        });
    }

    private static object View(IGuardianKeyProvider keys) => new
    {
        provider = keys.Kind,
        signing = new { kid = keys.SigningKid, alg = "ES256", spki = Convert.ToBase64String(keys.SigningPublicKey) },
        active = keys.ActiveKey.Kid,
        encryption = keys.EncryptionKeys.Select(KeyView),
    };

    private static object KeyView(GuardianKeyInfo k) => new
    {
        kid = k.Kid,
        status = k.Status.ToString().ToLowerInvariant(),
        createdAt = k.CreatedAt,
        curve = "P-384",
        spki = Convert.ToBase64String(k.SubjectPublicKeyInfo),
    };
}

using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Api;

/// <summary>Roles of API tokens.</summary>
public static class Roles
{
    public const string FabricAdmin = "fabric-admin";
    public const string Tenant = "tenant";
    public const string Auditor = "auditor";
}

/// <summary>
/// Bearer API tokens: only their SHA-256 is stored, lookups are by hash (a database dump yields
/// no usable credential). The admin token is created once at first start and written to a 0600 file.
/// </summary>
public sealed class AdminAuth(IGuardianStore store)
{
    public async Task<(bool Ok, IResult? Error)> RequireAsync(HttpContext http, params string[] roles)
    {
        var header = http.Request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.Ordinal))
        {
            return (false, Problems.Of("auth.missing", "an API token is required (Authorization: Bearer …)", StatusCodes.Status401Unauthorized));
        }
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(header[7..].Trim()));
        var token = await store.FindApiTokenAsync(hash, http.RequestAborted);
        if (token is null)
        {
            return (false, Problems.Of("auth.invalid", "unknown API token", StatusCodes.Status401Unauthorized));
        }
        if (!roles.Contains(token.Role))
        {
            return (false, Problems.Of("auth.forbidden", $"role {token.Role} may not do this (needs {string.Join(" or ", roles)})", StatusCodes.Status403Forbidden));
        }
        return (true, null);
    }

    /// <summary>Creates the admin token on first start; returns the file holding it.</summary>
    public static async Task<string> EnsureAdminTokenAsync(IGuardianStore store, string dataDir, TimeProvider time)
    {
        var path = Path.Combine(dataDir, "admin-token");
        if (File.Exists(path))
        {
            return path;
        }
        var token = "rpt_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
        await store.InsertApiTokenAsync(new ApiTokenRecord("admin", "admin", Roles.FabricAdmin, SHA256.HashData(Encoding.UTF8.GetBytes(token)), time.GetUtcNow()));
        await using (var f = new FileStream(path, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite }))
        {
            await f.WriteAsync(Encoding.ASCII.GetBytes(token + "\n"));
        }
        return path;
    }
}

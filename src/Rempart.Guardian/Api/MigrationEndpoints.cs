using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Rempart.Attestation.Protocol;
using Rempart.Guardian.Release;

namespace Rempart.Guardian.Api;

/// <summary>
/// Live migration (docs/migration.md): authorise (source), check and accept (destination), complete (source).
/// Host-facing like /v1/releases: the health tokens are the credential, no API token; a refusal
/// is a problem document whose title is its stable id.
/// </summary>
public static class MigrationEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/migrations", (MigrationAuthoriseRequest request, MigrationService migrations, CancellationToken ct) =>
            Answer(() => migrations.AuthoriseAsync(request, ct)));
        app.MapPost("/v1/migrations/{id}/check", (string id, MigrationCheckRequest request, MigrationService migrations, CancellationToken ct) =>
            Answer(() => migrations.CheckAsync(id, request, ct)));
        app.MapPost("/v1/migrations/{id}/accept", (string id, MigrationAcceptRequest request, MigrationService migrations, CancellationToken ct) =>
            Answer(() => migrations.AcceptAsync(id, request, ct)));
        app.MapPost("/v1/migrations/{id}/complete", (string id, MigrationCompleteRequest request, MigrationService migrations, CancellationToken ct) =>
            Answer(() => migrations.CompleteAsync(id, request, ct)));
    }

    private static async Task<IResult> Answer<T>(Func<Task<T>> step)
    {
        try
        {
            return Results.Ok(await step());
        }
        catch (ReleaseException e)
        {
            return Problems.Of(e.Id, e.Message, e.Status);
        }
    }
}

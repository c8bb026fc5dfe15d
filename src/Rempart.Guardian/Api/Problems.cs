using Microsoft.AspNetCore.Http;

namespace Rempart.Guardian.Api;

/// <summary>Errors as RFC 9457 problem details with stable types (<c>urn:rempart:problem:&lt;id&gt;</c>), mapped in one place.</summary>
public static class Problems
{
    public static IResult Of(string id, string detail, int status = StatusCodes.Status400BadRequest) =>
        Results.Problem(detail: detail, statusCode: status, title: id, type: "urn:rempart:problem:" + id);

    public static int StatusFor(string id) => id switch
    {
        "auth.missing" or "auth.invalid" => StatusCodes.Status401Unauthorized,
        "auth.forbidden" => StatusCodes.Status403Forbidden,
        "attest.host.unknown" or "enrol.challenge.unknown" or "host.unknown" or "group.unknown" => StatusCodes.Status404NotFound,
        "enrol.ak.already-enrolled" => StatusCodes.Status409Conflict,
        _ => StatusCodes.Status400BadRequest,
    };
}

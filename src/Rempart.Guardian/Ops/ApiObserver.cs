using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Rempart.Guardian.Ops;

/// <summary>
/// Middleware that observes the host-facing endpoints from outside: it times
/// <c>POST /v1/attestations</c> and reads the verdict from the JSON it answered, times
/// <c>POST /v1/releases</c> (released, or the refusal's problem id), and counts enrolment
/// outcomes, so the attestation, release and enrolment services need not know about metrics.
/// After an attestation it nudges <see cref="HostStateEvents"/>, which reports state changes.
/// </summary>
public sealed class ApiObserver(OpsMetrics metrics, HostStateEvents events, TimeProvider time)
{
    /// <summary>Verdicts are small; a body larger than this is not read (the verdict counts as "other").</summary>
    private const int CaptureLimit = 64 * 1024;

    private const string AttestPattern = "/v1/attestations";
    private const string EnrolPattern = "/v1/enrolments";
    private const string ActivatePattern = "/v1/enrolments/{id}/activate";
    private const string ReleasePattern = "/v1/releases";

    public async Task InvokeAsync(HttpContext http, RequestDelegate next)
    {
        var path = http.Request.Path.Value ?? "";
        if (!HttpMethods.IsPost(http.Request.Method)
            || !(path.StartsWith(AttestPattern, StringComparison.OrdinalIgnoreCase) || path.StartsWith(EnrolPattern, StringComparison.OrdinalIgnoreCase)
                 || path.StartsWith(ReleasePattern, StringComparison.OrdinalIgnoreCase)))
        {
            await next(http);
            return;
        }
        var started = time.GetTimestamp();
        var body = http.Response.Body;
        using var capture = new CapturingStream(body, CaptureLimit);
        http.Response.Body = capture;
        try
        {
            await next(http);
        }
        finally
        {
            http.Response.Body = body;
        }
        // Routing has run by now: match on the route pattern. The exception handler clears the
        // endpoint when it answers, so a refusal it wrote is matched on the path instead.
        var pattern = (http.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? PatternOf(path);
        var ok = http.Response.StatusCode is >= 200 and < 300;
        switch (pattern)
        {
            case AttestPattern:
                metrics.Attestation(ok ? Field(capture, "status") ?? "other" : "error", time.GetElapsedTime(started));
                events.Nudge();
                break;
            case ReleasePattern:
                metrics.Release(ok ? "released" : Field(capture, "title") ?? "other", time.GetElapsedTime(started));
                break;
            case ActivatePattern:
                metrics.Enrolment((ok ? Field(capture, "state") : Field(capture, "title")) ?? "other");
                break;
            case EnrolPattern when !ok:
                metrics.Enrolment(Field(capture, "title") ?? "other");
                break;
        }
    }

    private static string? PatternOf(string path)
    {
        var segments = path.Trim('/').Split('/');
        return segments switch
        {
            ["v1", "attestations"] => AttestPattern,
            ["v1", "releases"] => ReleasePattern,
            ["v1", "enrolments"] => EnrolPattern,
            ["v1", "enrolments", _, "activate"] => ActivatePattern,
            _ => null,
        };
    }

    /// <summary>A top-level string property of the captured JSON answer, or null.</summary>
    private static string? Field(CapturingStream capture, string name)
    {
        if (!capture.Complete)
        {
            return null;
        }
        try
        {
            var reader = new Utf8JsonReader(capture.Captured);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                return null;
            }
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var match = reader.ValueTextEquals(name);
                reader.Read();
                if (match)
                {
                    return reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
                }
                reader.Skip();
            }
            return null;
        }
        catch (JsonException)
        {
            return null;
        }
    }
}

/// <summary>Puts <see cref="ApiObserver"/> at the start of the pipeline, outside the exception handler, so refusals are counted too.</summary>
internal sealed class ApiObserverStartupFilter : IStartupFilter
{
    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
    {
        var observer = app.ApplicationServices.GetRequiredService<ApiObserver>();
        app.Use(observer.InvokeAsync);
        next(app);
    };
}

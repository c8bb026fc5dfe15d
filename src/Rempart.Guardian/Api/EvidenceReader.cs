using System.Buffers;
using System.IO.Pipelines;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Rempart.Attestation.Protocol;
using Rempart.Guardian.Attestation;

namespace Rempart.Guardian.Api;

/// <summary>
/// Reads the body of <c>POST /v1/attestations</c> (about 40 kB, mostly the base64 event log). The
/// framework's binding deserialised it from the request pipe as it arrived, restarting the
/// unfinished 32 kB string token at each new segment, into strings that the service then decoded
/// again: ~210 µs of CPU per body in a probe, against ~110 µs for this — the whole body read
/// first (Kestrel's 1 MiB limit still applies), then parsed once with the binary members decoded by
/// the JSON reader (<see cref="EvidenceBytes"/>). Evidence whose binary members are not base64 is
/// read as strings instead, so the service refuses it as before (<c>evidence.format</c>, audited).
/// </summary>
internal static class EvidenceReader
{
    public readonly record struct Read(EvidenceBytes? Bytes, AttestationEvidence? Strings, IResult? Error);

    public static async Task<Read> ReadAsync(HttpRequest request, CancellationToken ct)
    {
        if (!request.HasJsonContentType())
        {
            return new(null, null, Results.StatusCode(StatusCodes.Status415UnsupportedMediaType));
        }
        var body = await ReadAllAsync(request.BodyReader, ct);
        try
        {
            if (JsonSerializer.Deserialize(body, GuardianJson.Default.EvidenceBytes) is { Complete: true } bytes)
            {
                return new(bytes, null, null);
            }
        }
        catch (JsonException)
        {
            // Not base64, or not JSON at all: the string form tells which.
        }
        try
        {
            return JsonSerializer.Deserialize(body, GuardianJson.Default.AttestationEvidence) is { } strings
                ? new(null, strings, null)
                : new(null, null, Problems.Of("request.invalid", "the request could not be read"));
        }
        catch (JsonException)
        {
            return new(null, null, Problems.Of("request.invalid", "the request could not be read"));
        }
    }

    /// <summary>
    /// The whole body, or an <see cref="OperationCanceledException"/>: a read cancelled before the
    /// body's end (the request aborted, or a pending read cancelled) never yields the bytes read so
    /// far as if they were the body — the endpoint then answers nothing.
    /// </summary>
    private static async Task<byte[]> ReadAllAsync(PipeReader reader, CancellationToken ct)
    {
        while (true)
        {
            var read = await reader.ReadAsync(ct);
            if (read.IsCanceled)
            {
                reader.AdvanceTo(read.Buffer.Start);
                ct.ThrowIfCancellationRequested();
                throw new OperationCanceledException("the request body's read was cancelled before its end");
            }
            if (read.IsCompleted)
            {
                ct.ThrowIfCancellationRequested();
                var body = read.Buffer.ToArray();
                reader.AdvanceTo(read.Buffer.End);
                return body;
            }
            reader.AdvanceTo(read.Buffer.Start, read.Buffer.End);
        }
    }
}

using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Rempart.Guardian.Api;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Ops;

/// <summary>
/// One audit record on the wire: the fields exactly as hashed (<c>dataJson</c> verbatim,
/// <c>at</c> to the millisecond), hashes in base64, so anyone can recompute the chain
/// (<see cref="AuditChain"/> documents the encoding).
/// </summary>
public sealed record AuditRecordView(
    [property: JsonPropertyName("seq")] long Seq,
    [property: JsonPropertyName("at")] DateTimeOffset At,
    [property: JsonPropertyName("kind")] string Kind,
    [property: JsonPropertyName("subject")] string Subject,
    [property: JsonPropertyName("dataJson")] string DataJson,
    [property: JsonPropertyName("prevHash")] string PrevHash,
    [property: JsonPropertyName("hash")] string Hash)
{
    public static AuditRecordView Of(AuditRecord r) =>
        new(r.Seq, r.At, r.Kind, r.Subject, r.DataJson, Convert.ToBase64String(r.PrevHash), Convert.ToBase64String(r.Hash));
}

/// <summary>A page of the audit log; <c>next</c> is the seq to ask for next, null at the end.</summary>
public sealed record AuditPage(
    [property: JsonPropertyName("records")] IReadOnlyList<AuditRecordView> Records,
    [property: JsonPropertyName("next")] long? Next);

/// <summary>
/// The verdict on the whole chain. <c>headSeq</c>/<c>headHash</c> identify the newest record:
/// kept elsewhere, they also reveal a later truncation, which the chain alone cannot.
/// </summary>
public sealed record AuditVerification(
    [property: JsonPropertyName("ok")] bool Ok,
    [property: JsonPropertyName("records")] long Records,
    [property: JsonPropertyName("firstBadSeq")] long? FirstBadSeq,
    [property: JsonPropertyName("headSeq")] long? HeadSeq,
    [property: JsonPropertyName("headHash")] string? HeadHash);

/// <summary><c>GET /v1/audit</c> and <c>GET /v1/audit/verify</c> (fabric-admin or auditor).</summary>
public static class AuditEndpoints
{
    public const int MaxPage = 1000;

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/audit", async (HttpContext http, AdminAuth auth, IGuardianStore store, long? from, int? max) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Auditor);
            if (!ok)
            {
                return error!;
            }
            var start = from ?? 1;
            var count = max ?? 100;
            if (start < 1 || count is < 1 or > MaxPage)
            {
                return Problems.Of("audit.query", $"from is a seq ≥ 1 and max is 1 to {MaxPage}");
            }
            var records = await store.ReadAuditAsync(start, count, http.RequestAborted);
            long? next = records.Count == count ? records[^1].Seq + 1 : null;
            return Results.Ok(new AuditPage(records.Select(AuditRecordView.Of).ToList(), next));
        });
        app.MapGet("/v1/audit/verify", async (HttpContext http, AdminAuth auth, IGuardianStore store) =>
        {
            var (ok, error) = await auth.RequireAsync(http, Roles.FabricAdmin, Roles.Auditor);
            return ok ? Results.Ok(await VerifyAsync(store, http.RequestAborted)) : error!;
        });
    }

    /// <summary>Verifies the whole log page by page, each page chained to the last hash of the one before.</summary>
    public static async Task<AuditVerification> VerifyAsync(IGuardianStore store, CancellationToken ct)
    {
        long expectedSeq = 1, count = 0;
        long? firstBad = null;
        var prevHash = AuditChain.Genesis;
        AuditRecord? head = null;
        while (true)
        {
            var page = await store.ReadAuditAsync(head is null ? 1 : head.Seq + 1, MaxPage, ct);
            if (page.Count == 0)
            {
                break;
            }
            if (firstBad is null)
            {
                var (ok, bad) = AuditChain.Verify(page, expectedSeq, prevHash);
                firstBad = ok ? null : bad;
                prevHash = page[^1].Hash;
                expectedSeq = page[^1].Seq + 1;
            }
            count += page.Count;
            head = page[^1];
        }
        return new AuditVerification(firstBad is null, count, firstBad, head?.Seq, head is null ? null : Convert.ToBase64String(head.Hash));
    }
}

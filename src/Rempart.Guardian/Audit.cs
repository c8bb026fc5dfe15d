using System.Text.Json;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian;

/// <summary>Writes hash-chained audit records (never secrets: callers pass ids, names and reasons only).</summary>
public sealed class Audit(IGuardianStore store, TimeProvider time)
{
    public Task<AuditRecord> WriteAsync(string kind, string subject, object data, CancellationToken ct) =>
        store.AppendAuditAsync(kind, subject, JsonSerializer.Serialize(data), time.GetUtcNow(), ct);
}

using System.Collections.Concurrent;
using Rempart.Attestation.Policy;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Attestation;

/// <summary>
/// Policies by host group: the latest version of the group's policy, parsed once per version.
/// A group naming a policy that is missing or no longer parses fails closed (the caller reports
/// <c>policy.missing</c> / <c>policy.invalid</c>).
/// </summary>
public sealed class PolicyCatalog(IGuardianStore store)
{
    private readonly ConcurrentDictionary<(string, int), PolicyDocument> _parsed = new();

    public async Task<(PolicyDocument? Document, string? ErrorId, string? Error)> ForGroupAsync(string? groupName, CancellationToken ct)
    {
        if (groupName is null || await store.GetGroupAsync(groupName, ct) is not { PolicyId: { Length: > 0 } policyId })
        {
            return (null, null, null);
        }
        var record = await store.GetPolicyAsync(policyId, null, ct);
        if (record is null)
        {
            return (null, "policy.missing", $"host group {groupName} names policy '{policyId}', which does not exist");
        }
        if (_parsed.TryGetValue((record.Id, record.Version), out var doc))
        {
            return (doc, null, null);
        }
        var parsed = PolicyDocument.Parse(record.Document);
        if (parsed.Document is null)
        {
            return (null, "policy.invalid", $"policy {record.Id} v{record.Version} does not parse: {string.Join("; ", parsed.Errors)}");
        }
        _parsed[(record.Id, record.Version)] = parsed.Document;
        return (parsed.Document, null, null);
    }
}

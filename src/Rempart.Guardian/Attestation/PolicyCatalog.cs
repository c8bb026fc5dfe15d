using System.Collections.Concurrent;
using Rempart.Attestation.Policy;
using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Attestation;

/// <summary>
/// Policies by host group: the latest version of the group's policy, parsed once per version.
/// The group's policy id and its latest version come with the host at the start of an attestation
/// (<see cref="AttestationStart"/>, same statement, same snapshot); a released version never
/// changes, so its document is read and parsed once. A group naming a policy that is missing or
/// no longer parses fails closed (the caller reports <c>policy.missing</c> / <c>policy.invalid</c>).
/// </summary>
public sealed class PolicyCatalog(IGuardianStore store)
{
    private readonly ConcurrentDictionary<(string, int), PolicyDocument> _parsed = new();

    /// <summary>The policy of an attestation's start: none, the parsed document, or the error that fails it.</summary>
    public async Task<(PolicyDocument? Document, string? ErrorId, string? Error)> ForAttestationAsync(AttestationStart start, CancellationToken ct)
    {
        if (start.PolicyId is not { Length: > 0 } policyId)
        {
            return (null, null, null);
        }
        if (start.PolicyVersion is not { } version)
        {
            return (null, "policy.missing", $"host group {start.Host?.Group} names policy '{policyId}', which does not exist");
        }
        if (_parsed.TryGetValue((policyId, version), out var known))
        {
            return (known, null, null);
        }
        var record = await store.GetPolicyAsync(policyId, version, ct);
        if (record is null)
        {
            return (null, "policy.missing", $"host group {start.Host?.Group} names policy '{policyId}' v{version}, which no longer exists");
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

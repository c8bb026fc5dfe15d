using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.Attestation.Protocol;
using Rempart.Guardian.Keys;
using Rempart.Guardian.Storage;
using Rempart.Guardian.Tokens;
using Rempart.KeyProtection;
using Rempart.Tpm;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;

namespace Rempart.Guardian.Release;

/// <summary>A refused release, with a stable identifier (<c>release.token.revoked</c>, <c>release.host.not-healthy</c> …) and its HTTP status.</summary>
public sealed class ReleaseException(string id, string message, int status = 403) : Exception(message)
{
    public string Id { get; } = id;

    public int Status { get; } = status;
}

/// <summary>
/// Key release (DESIGN.md §3.4, docs/key-release.md): a host presents a VM's key protector and
/// its health token. The Guardian checks the token (its own signature, lifetime, revocation), the
/// host's *current* state, the key protector (a wrap for one of this Guardian's keys, its MAC)
/// and that the host's group is one the key protector allows; then it re-wraps the VM master key
/// to the binding key the token names — a key only that TPM, in the attested boot state, can
/// use — under a fresh release id. Every release and every refusal is a hash-chained audit
/// record. The VM master key exists in this process only between unwrap and re-wrap, and is wiped.
/// </summary>
public sealed class ReleaseService(IGuardianStore store, HealthTokens tokens, IGuardianKeyProvider keys, Audit audit, TimeProvider time)
{
    public const string ReleasedKind = "key.released";
    public const string RefusedKind = "key.release-refused";

    /// <summary>The prefix of a plain release's refusal ids; a migration checks its two hosts with its own (MigrationService).</summary>
    private const string Prefix = "release.";

    public async Task<ReleaseResponse> ReleaseAsync(ReleaseRequest request, CancellationToken ct)
    {
        string subject = "vm:?";
        var context = new JsonObject();
        try
        {
            var kp = ParseKp(request.KeyProtector, Prefix);
            subject = Subject(kp.VmId);
            context["kpId"] = kp.KpId;
            var (claims, host) = await CheckTokenAndHostAsync(request.Token, context, Prefix, ct);
            var binding = BindingKey(claims, Prefix);
            using var vmk = Unwrap(kp, Prefix);
            if (!kp.Policy.Allows(host.Group!))
            {
                throw new ReleaseException("release.group.not-allowed", NotAllowed(kp, host));
            }
            return await SealAsync(kp, vmk, binding, claims, host, null, ct);
        }
        catch (ReleaseException e)
        {
            context["reason"] = e.Id;
            await audit.WriteAsync(RefusedKind, subject, context, ct);
            throw;
        }
        catch (KeyProviderException e)
        {
            // The key provider failed (HSM unreachable, …): fail closed, and say so in the audit log.
            context["reason"] = "release.keys." + e.Id;
            await audit.WriteAsync(RefusedKind, subject, context, ct);
            throw new ReleaseException("release.keys.unavailable", "the Guardian's key provider could not unwrap the key: " + e.Message, 503);
        }
    }

    /// <summary>
    /// Key rotation for a key protector: opens it with any of this Guardian's non-retired keys
    /// (checking its MAC), adds a wrap for the active key and drops this Guardian's older wraps,
    /// re-authenticated; other Guardians' wraps and the owner wrap are kept as they are. The VM
    /// key never leaves this method. Returns the new key protector and whether it changed.
    /// </summary>
    public async Task<(KeyProtector Kp, bool Changed)> RewrapAsync(string keyProtector, CancellationToken ct)
    {
        var kp = ParseKp(keyProtector, Prefix);
        var active = keys.ActiveKey;
        var ours = keys.EncryptionKeys.Select(k => k.Kid).ToHashSet(StringComparer.Ordinal);
        var stale = kp.Guardians.Where(w => ours.Contains(w.Kid) && w.Kid != active.Kid).Select(w => w.Kid).ToList();
        if (stale.Count == 0 && kp.Guardians.Any(w => w.Kid == active.Kid))
        {
            return (kp, false);
        }
        KeyProtector updated;
        try
        {
            using var vmk = kp.UnwrapWithGuardian(keys, keys.EncryptionKeys);
            updated = kp.Rewrap(vmk, new GuardianRecipient(Api.ReleaseEndpoints.GuardianId(keys), active), stale);
        }
        catch (KeyProtectorException e)
        {
            throw new ReleaseException("rewrap." + e.Id, e.Message, 400);
        }
        await audit.WriteAsync("kp.rewrapped", Subject(kp.VmId), new { kpId = kp.KpId, added = active.Kid, removed = stale }, ct);
        return (updated, true);
    }

    /// <summary>Opens a key protector with this Guardian's keys (its MAC checked); a failure is <c>{prefix}kp.*</c> (400). The caller disposes the key.</summary>
    internal VmMasterKey Unwrap(KeyProtector kp, string prefix)
    {
        try
        {
            return kp.UnwrapWithGuardian(keys, keys.EncryptionKeys);
        }
        catch (KeyProtectorException e)
        {
            throw new ReleaseException(prefix + e.Id, e.Message, 400);
        }
    }

    /// <summary>Why a host's group is refused by a key protector's policy.</summary>
    internal static string NotAllowed(KeyProtector kp, HostRecord host) =>
        $"host {host.Id} is in group '{host.Group}'; this key protector allows only {string.Join(", ", kp.Policy.HostGroups.Select(g => $"'{g}'"))}";

    /// <summary>
    /// The release itself, once every check has passed: the VM key re-wrapped to the binding key
    /// under a fresh release id, and its <c>key.released</c> audit record (with the migration's id
    /// when it is one end of a live migration).
    /// </summary>
    internal async Task<ReleaseResponse> SealAsync(KeyProtector kp, VmMasterKey vmk, TpmtPublic binding, JsonObject claims, HostRecord host,
        string? migrationId, CancellationToken ct)
    {
        var releaseId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        var wrapped = ReleaseWrap.Seal(binding, vmk.Bytes, releaseId);
        var shielding = ReleasePolicy.ToWire(kp.Policy.Shielding);
        var data = JsonSerializer.SerializeToNode(new
        {
            releaseId,
            vmId = kp.VmId,
            kpId = kp.KpId,
            host = host.Id,
            group = host.Group,
            jti = claims["jti"]?.GetValue<string>() ?? "",
            policy = claims["ear.appraisal-policy-id"]?.GetValue<string>(),
            policyVersion = claims["rempart.policy-version"]?.GetValue<int>(),
            shielding,
            bindingKey = claims["rempart.binding-key"]!.GetValue<string>(),
        })!.AsObject();
        if (migrationId is not null)
        {
            data["migrationId"] = migrationId;
        }
        var record = await audit.WriteAsync(ReleasedKind, Subject(kp.VmId), data, ct);
        return new ReleaseResponse(releaseId, kp.VmId, kp.KpId, host.Id, shielding, Convert.ToHexStringLower(binding.Name()),
            ReleaseWrap.Scheme, Convert.ToBase64String(wrapped), record.Seq);
    }

    /// <summary>The audit subject of a VM's releases.</summary>
    public static string Subject(string vmId) => "vm:" + vmId;

    /// <summary>Reads a key protector; a malformed one is <c>{prefix}kp.format</c>.</summary>
    internal static KeyProtector ParseKp(string text, string prefix)
    {
        try
        {
            return KeyProtector.Parse(Encoding.UTF8.GetBytes(text ?? ""));
        }
        catch (KeyProtectorException e)
        {
            throw new ReleaseException(prefix + "kp.format", "the key protector cannot be read: " + e.Message, 400);
        }
    }

    /// <summary>
    /// A health token this Guardian issued: its signature (by this Guardian's key), its lifetime at
    /// <paramref name="now"/>, and a jti recorded for the token's host. Revocation and the host's
    /// state are the caller's to check. The jti and host go into <paramref name="context"/>.
    /// </summary>
    internal async Task<(JsonObject Claims, IssuedTokenRecord Issued)> CheckIssuedAsync(string token, DateTimeOffset now, JsonObject context, string prefix,
        CancellationToken ct)
    {
        var claims = tokens.Validate(token ?? "", now, out var reason);
        if (claims is null)
        {
            throw reason switch
            {
                "token.expired" => new ReleaseException(prefix + "token.expired", "the health token has expired: attest again", 401),
                "token.key" => new ReleaseException(prefix + "token.foreign", "the health token was not issued by this Guardian", 401),
                "token.signature" => new ReleaseException(prefix + "token.signature", "the health token's signature does not verify", 401),
                _ => new ReleaseException(prefix + "token.format", "the health token cannot be read", 401),
            };
        }
        var jti = claims["jti"]?.GetValue<string>() ?? "";
        var hostId = claims["sub"]?.GetValue<string>() ?? "";
        context["jti"] = jti;
        context["host"] = hostId;
        var issued = await store.GetTokenAsync(jti, ct);
        if (issued is null || issued.HostId != hostId)
        {
            throw new ReleaseException(prefix + "token.unknown", "this Guardian has no record of that health token", 401);
        }
        return (claims, issued);
    }

    /// <summary>
    /// A health token and its host, as every release checks them: this Guardian's signature, the
    /// lifetime, a recorded and unrevoked jti, an affirming (or warning) status, a host that is
    /// healthy now and still in the token's group. Refusal ids are <c>{prefix}token.*</c> and
    /// <c>{prefix}host.*</c>; the jti, host and group found go into <paramref name="context"/> for the audit record.
    /// </summary>
    internal async Task<(JsonObject Claims, HostRecord Host)> CheckTokenAndHostAsync(string token, JsonObject context, string prefix, CancellationToken ct)
    {
        var (claims, issued) = await CheckIssuedAsync(token, time.GetUtcNow(), context, prefix, ct);
        var hostId = issued.HostId;
        if (issued.RevokedAt is not null)
        {
            throw new ReleaseException(prefix + "token.revoked", $"the health token was revoked at {issued.RevokedAt:u} (the host failed, went stale or was removed)", 401);
        }
        if (claims["ear.status"]?.GetValue<string>() is not ("affirming" or "warning"))
        {
            throw new ReleaseException(prefix + "token.status", "the health token does not affirm the host");
        }
        var host = await store.GetHostAsync(hostId, ct);
        if (host is null || host.State == HostStates.Removed)
        {
            throw new ReleaseException(prefix + "host.unknown", $"no host {hostId}", 404);
        }
        if (host.State != HostStates.Healthy)
        {
            throw new ReleaseException(prefix + "host.not-healthy", $"host {hostId} is {host.State} now: keys go only to healthy hosts");
        }
        var tokenGroup = claims["rempart.group"]?.GetValue<string>();
        if (host.Group is null || tokenGroup != host.Group)
        {
            throw new ReleaseException(prefix + "host.group-changed", $"host {hostId} is in group '{host.Group}' now, the token says '{tokenGroup}': attest again");
        }
        context["group"] = host.Group;
        return (claims, host);
    }

    /// <summary>The binding key the token certifies (its public area is in the token, its Name too).</summary>
    internal static TpmtPublic BindingKey(JsonObject claims, string prefix)
    {
        TpmtPublic key;
        try
        {
            key = TpmtPublic.ParseSized(Base64Url.DecodeFromChars(claims["rempart.binding-public"]?.GetValue<string>() ?? ""));
        }
        catch (Exception e) when (e is FormatException or TpmFormatException)
        {
            throw new ReleaseException(prefix + "binding-key.format", "the health token carries no usable binding key: attest again");
        }
        var name = claims["rempart.binding-key"]?.GetValue<string>() ?? "";
        if (!string.Equals(Convert.ToHexStringLower(key.Name()), name, StringComparison.Ordinal))
        {
            throw new ReleaseException(prefix + "binding-key.name", "the token's binding key does not match its Name");
        }
        if (ReleaseWrap.Unsupported(key) is { } why)
        {
            throw new ReleaseException(prefix + "binding-key.unsupported", why, 400);
        }
        return key;
    }
}

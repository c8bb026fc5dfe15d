using System.Security.Cryptography;
using System.Text.Json.Serialization;
using Rempart.Attestation.Protocol;
using Rempart.KeyProtection;
using Rempart.LoadGen;

namespace Rempart.ReleaseBench;

[JsonSerializable(typeof(ReleaseRequest))]
[JsonSerializable(typeof(ReleaseResponse))]
internal sealed partial class ReleaseJson : JsonSerializerContext;

/// <summary>
/// A software host that can receive keys: a LoadGen <see cref="SoftwareTpm"/> made with a binding
/// key whose private part this benchmark keeps (a real TPM would never show it), so a sample of the
/// released keys can be opened and compared with the VM master key — and its current health token.
/// </summary>
public sealed class ReleaseHost(EnrolledHost host, RSA bindingKey) : IDisposable
{
    public string HostId => host.HostId;

    public SoftwareTpm Tpm => host.Tpm;

    /// <summary>The binding key's private part (the software TPM's; for the answer check only).</summary>
    public RSA BindingKey { get; } = bindingKey;

    /// <summary>The health token of the host's last affirming attestation.</summary>
    public string Token { get; set; } = "";

    public void Dispose()
    {
        host.Tpm.Dispose();
        BindingKey.Dispose();
    }
}

/// <summary>A VM's key protector (JSON, as a host sends it) and the VM master key it protects (kept to check releases).</summary>
public sealed record VmKey(string VmId, string KeyProtector, byte[] Vmk);

/// <summary>
/// The fleet a release run needs: software hosts enrolled, approved and attested through the
/// Guardian's normal API (LoadGen's <see cref="Fleet"/>), and key protectors made as a tenant makes
/// them, offline, from the Guardian's signed metadata.
/// </summary>
public static class ReleaseFleet
{
    public const string Group = "release-bench";

    /// <summary>Makes, enrols and approves <paramref name="count"/> software hosts into <see cref="Group"/>, under LoadGen's default policy.</summary>
    public static async Task<IReadOnlyList<ReleaseHost>> EnrolAsync(GuardianHttp http, GuardianHttp admin, SoftwareEkCa ca, SimulatedBoot boot, int count,
        TextWriter progress, CancellationToken ct)
    {
        var bindingKeys = Enumerable.Range(0, count).Select(_ => RSA.Create(2048)).ToArray();
        var tpms = bindingKeys.Select(k => new SoftwareTpm(ca, boot, bindingKey: k)).ToArray();
        var enrolled = await Fleet.EnrolAsync(http, admin, tpms, Group, Fleet.DefaultPolicy(boot), Math.Min(8, count), progress, ct);
        return enrolled.Select((h, i) => new ReleaseHost(h, bindingKeys[i])).ToArray();
    }

    /// <summary>Attests every host once (nonce, evidence, verdict) and keeps its health token; a host not affirmed stops the run.</summary>
    public static async Task AttestAsync(GuardianHttp http, IReadOnlyList<ReleaseHost> hosts, CancellationToken ct)
    {
        foreach (var host in hosts)
        {
            var nonce = await http.NonceAsync(host.HostId, ct);
            var verdict = await http.AttestAsync(host.Tpm.Evidence(host.HostId, nonce.Nonce), ct);
            if (verdict.Status != "affirming" || verdict.Token is null)
            {
                throw new InvalidOperationException($"host {host.HostId} was not affirmed: " + string.Join("; ", verdict.Failures.Select(f => $"{f.Id}: {f.Message}")));
            }
            host.Token = verdict.Token;
        }
    }

    /// <summary>
    /// <paramref name="count"/> key protectors for VMs release-bench-00000…, each allowing <see cref="Group"/>
    /// at the shielded level, wrapped for a fresh owner key and for the Guardian of <paramref name="metadataJson"/>.
    /// </summary>
    public static IReadOnlyList<VmKey> KeyProtectors(string metadataJson, int count)
    {
        var metadata = GuardianMetadata.Parse(metadataJson);
        using var owner = OwnerKey.Generate();
        var policy = new ReleasePolicy(ShieldingLevel.Shielded, [Group]);
        var kps = new VmKey[count];
        Parallel.For(0, count, i =>
        {
            var vmId = $"release-bench-{i:D5}";
            var (kp, vmk) = KeyProtector.Create(vmId, policy, owner.PublicKey, [metadata]);
            using (vmk)
            {
                kps[i] = new VmKey(vmId, kp.ToJson(), vmk.Bytes.ToArray());
            }
        });
        return kps;
    }
}

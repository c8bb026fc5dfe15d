using Rempart.Attestation.Protocol;
using Rempart.Host.Attestation;
using Rempart.Host.Guardian;
using Rempart.Host.Keys;

namespace Rempart.Integration.Tests;

/// <summary>
/// swtpm hosts for the release and migration flows: enrolled and approved into a group, attested
/// (affirming, or the test fails with the Guardian's reasons), and a release opened in the host's TPM.
/// </summary>
internal static class AttestedHosts
{
    public const string DefaultLog = "go-tpm-tools__arch-linux-workstation.bin";

    public static async Task<SwtpmHost> ApprovedAsync(GuardianFixture g, GuardianClient client, string group, string log = DefaultLog)
    {
        var host = new SwtpmHost(log);
        await g.ApproveAsync((await host.EnrolAsync(client, "hv-" + group)).HostId, group);
        return host;
    }

    public static async Task<(string Token, CollectedEvidence Binding)> AttestAsync(GuardianClient client, SwtpmHost host)
    {
        var nonce = await client.NonceAsync(host.HostId!);
        var collected = host.Collect(nonce.Nonce);
        var result = await client.AttestAsync(collected.Evidence);
        Assert.True(result.Status == "affirming", string.Join("; ", result.Failures.Select(f => $"{f.Id}: {f.Message}")));
        return (result.Token!, collected);
    }

    /// <summary>The released VM key as recovered by TPM2_RSA_Decrypt in that host's TPM (hex).</summary>
    public static string Unwrap(SwtpmHost host, CollectedEvidence binding, ReleaseResponse release)
    {
        using var c = host.Tpm.Client();
        using var vmk = new ReleaseUnwrapper(c).Unwrap(binding.BindingKeyPrivate, binding.BindingKeyPublic, binding.BindingPcrs, release);
        return Convert.ToHexStringLower(vmk.Bytes);
    }
}

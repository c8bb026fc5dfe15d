using Rempart.Attestation.Tests;
using Rempart.Attestation.EventLog;
using Rempart.Attestation.Protocol;
using Rempart.Host.Attestation;
using Rempart.Host.Guardian;
using Rempart.Tpm;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Integration.Tests;

/// <summary>
/// A simulated hypervisor host: a real swtpm that replayed a real firmware log (as
/// `rempart tpm replay-boot` does), talking to the Guardian through the host library.
/// </summary>
public sealed class SwtpmHost : IDisposable
{
    public SwtpmHost(string logName = "go-tpm-tools__arch-linux-workstation.bin", string banks = "sha1,sha256")
    {
        Tpm = new Swtpm(banks);
        EventLog = Fixtures.Bytes(logName);
        using var c = Tpm.Client();
        Replay(c, EventLog);
    }

    public Swtpm Tpm { get; }

    public byte[] EventLog { get; set; }

    public string? HostId { get; private set; }

    public static void Replay(TpmClient c, byte[] log) => BootReplay.Extend(c, EventLogParser.Parse(log));

    public async Task<EnrolmentResult> EnrolAsync(GuardianClient guardian, string hostname = "hv1")
    {
        EnrolmentRequest request;
        using (var c = Tpm.Client())
        {
            request = new HostIdentity(c).BuildRequest(hostname);
        }
        var challenge = await guardian.StartEnrolmentAsync(request);
        EnrolmentActivation answer;
        using (var c = Tpm.Client())
        {
            answer = new CredentialActivator(c).Answer(challenge);
        }
        var result = await guardian.ActivateAsync(challenge.EnrolmentId, answer);
        HostId = result.HostId;
        return result;
    }

    public CollectedEvidence Collect(string nonceHex, string? asHostId = null, TpmlPcrSelection? bindingPcrs = null)
    {
        using var c = Tpm.Client();
        return new EvidenceCollector(c, bindingPcrs).Collect(asHostId ?? HostId!, Convert.FromHexString(nonceHex), EventLog);
    }

    public async Task<AttestationResult> AttestAsync(GuardianClient guardian)
    {
        var nonce = await guardian.NonceAsync(HostId!);
        return await guardian.AttestAsync(Collect(nonce.Nonce).Evidence);
    }

    public void Dispose() => Tpm.Dispose();
}

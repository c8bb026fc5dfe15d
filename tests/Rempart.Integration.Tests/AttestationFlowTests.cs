using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Rempart.Host.Guardian;
using Rempart.Tpm;
using Rempart.Tpm.Structures;

namespace Rempart.Integration.Tests;

/// <summary>
/// The Guardian end to end with swtpm hosts booted from real firmware logs: enrolment, approval,
/// attestation, health tokens, and a precise refusal for each way evidence can be wrong.
/// </summary>
public sealed class AttestationFlowTests : IAsyncLifetime
{
    private GuardianFixture _g = null!;
    private GuardianClient _client = null!;

    public async Task InitializeAsync()
    {
        _g = await GuardianFixture.StartAsync();
        _client = new GuardianClient(_g.Url);
        await _g.CreateGroupAsync("prod");
    }

    public async Task DisposeAsync()
    {
        _client.Dispose();
        await _g.DisposeAsync();
    }

    private async Task<SwtpmHost> ApprovedHostAsync(string log = "go-tpm-tools__arch-linux-workstation.bin")
    {
        var host = new SwtpmHost(log);
        var enrolled = await host.EnrolAsync(_client);
        Assert.Equal("pending", enrolled.State);
        await _g.ApproveAsync(enrolled.HostId, "prod");
        return host;
    }

    [Fact]
    public async Task An_approved_host_is_affirmed_and_its_token_verifies_with_the_JWKS_until_revoked_or_expired()
    {
        using var host = await ApprovedHostAsync();
        var result = await host.AttestAsync(_client);
        Assert.True(result.Status == "affirming", string.Join("; ", result.Failures.Select(f => $"{f.Id}: {f.Message}")));
        Assert.NotNull(result.Token);

        // Independent check of the JWT with the published JWKS (RFC 7515/7517), not the Guardian's code.
        var jwks = JsonNode.Parse(await _g.Http.GetStringAsync(".well-known/jwks.json"))!["keys"]![0]!;
        var parts = result.Token!.Split('.');
        using var key = ECDsa.Create(new ECParameters
        {
            Curve = ECCurve.NamedCurves.nistP256,
            Q = new ECPoint { X = Base64Url.DecodeFromChars(jwks["x"]!.GetValue<string>()), Y = Base64Url.DecodeFromChars(jwks["y"]!.GetValue<string>()) },
        });
        Assert.True(key.VerifyData(Encoding.ASCII.GetBytes(parts[0] + "." + parts[1]), Base64Url.DecodeFromChars(parts[2]), HashAlgorithmName.SHA256));
        var claims = JsonNode.Parse(Base64Url.DecodeFromChars(parts[1]))!;
        Assert.Equal("affirming", claims["ear.status"]!.GetValue<string>());
        Assert.Equal(host.HostId, claims["sub"]!.GetValue<string>());
        Assert.Equal("prod", claims["rempart.group"]!.GetValue<string>());

        // The API is described by an OpenAPI document.
        var openapi = JsonNode.Parse(await _g.Http.GetStringAsync("openapi/v1.json"))!;
        Assert.NotNull(openapi["paths"]!["/v1/attestations"]);
        Assert.NotNull(openapi["paths"]!["/v1/enrolments"]);

        var valid = await _client.PostJsonAsync("v1/tokens/validate", new { token = result.Token });
        Assert.True(valid["valid"]!.GetValue<bool>(), valid.ToJsonString());

        // Expired: past its lifetime the token is refused.
        _g.Clock.Advance(TimeSpan.FromMinutes(6));
        var expired = await _client.PostJsonAsync("v1/tokens/validate", new { token = result.Token });
        Assert.Equal("token.expired", expired["reason"]!.GetValue<string>());
    }

    [Fact]
    public async Task Refusals_name_the_check_replayed_nonce_other_TPM_changed_log_extra_extend_binding_policy()
    {
        using var host = await ApprovedHostAsync();
        var first = await host.AttestAsync(_client);
        Assert.Equal("affirming", first.Status);

        // Replayed nonce: the same evidence again.
        var nonce = await _client.NonceAsync(host.HostId!);
        var evidence = host.Collect(nonce.Nonce).Evidence;
        Assert.Equal("affirming", (await _client.AttestAsync(evidence)).Status);
        var replay = await _client.AttestAsync(evidence);
        Assert.Equal(["attest.nonce"], replay.Failures.Select(f => f.Id));

        // Expired nonce.
        var old = await _client.NonceAsync(host.HostId!);
        _g.Clock.Advance(TimeSpan.FromMinutes(2));
        var late = await _client.AttestAsync(host.Collect(old.Nonce).Evidence);
        Assert.Equal(["attest.nonce"], late.Failures.Select(f => f.Id));

        // A quote from another TPM, presented as this host's.
        using (var other = new SwtpmHost())
        {
            var n = await _client.NonceAsync(host.HostId!);
            var foreign = await _client.AttestAsync(other.Collect(n.Nonce, asHostId: host.HostId).Evidence);
            Assert.Contains(foreign.Failures, f => f.Id == "quote.signature");
            Assert.Equal("contraindicated", foreign.Status);
        }

        // One byte changed in the event log: the PCR it feeds is named.
        var good = host.EventLog;
        var tampered = (byte[])good.Clone();
        var parsed = Rempart.Attestation.EventLog.EventLogParser.Parse(good);
        var ev = parsed.Events.First(e => e.Pcr == 4 && e.UntrustedType != Rempart.Attestation.EventLog.TcgEventType.NoAction);
        tampered[(int)ev.Offset + 12 + 2] ^= 0x01; // first byte of its first digest
        host.EventLog = tampered;
        var n2 = await _client.NonceAsync(host.HostId!);
        var changed = await _client.AttestAsync(host.Collect(n2.Nonce).Evidence);
        Assert.Contains(changed.Failures, f => f.Id == "eventlog.replay.pcr4");
        host.EventLog = good;

        // A binding key whose policy is not PolicyPCR over the quoted sha256 PCRs 0-7.
        var n3 = await _client.NonceAsync(host.HostId!);
        var badBinding = await _client.AttestAsync(host.Collect(n3.Nonce, bindingPcrs: TpmlPcrSelection.Of(TpmAlgId.Sha256, 0, 7)).Evidence);
        Assert.Equal(["binding.policy"], badBinding.Failures.Select(f => f.Id));

        // An extra PCR_Extend after boot.
        using (var c = host.Tpm.Client())
        {
            c.PcrExtend(5, new TpmlDigestValues([new TpmtHa(TpmAlgId.Sha1, new byte[20]), new TpmtHa(TpmAlgId.Sha256, new byte[32])]));
        }
        var n4 = await _client.NonceAsync(host.HostId!);
        var extended = await _client.AttestAsync(host.Collect(n4.Nonce).Evidence);
        Assert.Contains(extended.Failures, f => f.Id == "eventlog.replay.pcr5");
        Assert.Null(extended.Token);
    }

    [Fact]
    public async Task A_failed_attestation_revokes_the_hosts_token_at_once_and_a_pending_or_unknown_host_is_refused()
    {
        using var host = await ApprovedHostAsync();
        var ok = await host.AttestAsync(_client);
        Assert.Equal("affirming", ok.Status);
        using (var c = host.Tpm.Client())
        {
            c.PcrExtend(0, new TpmlDigestValues([new TpmtHa(TpmAlgId.Sha1, new byte[20]), new TpmtHa(TpmAlgId.Sha256, new byte[32])]));
        }
        var bad = await host.AttestAsync(_client);
        Assert.Equal("contraindicated", bad.Status);
        var revoked = await _client.PostJsonAsync("v1/tokens/validate", new { token = ok.Token });
        Assert.False(revoked["valid"]!.GetValue<bool>());
        Assert.Equal("token.revoked", revoked["reason"]!.GetValue<string>());

        using var pending = new SwtpmHost();
        var enrolled = await pending.EnrolAsync(_client, "hv-pending");
        var n = await _client.NonceAsync(enrolled.HostId);
        var refused = await _client.AttestAsync(pending.Collect(n.Nonce).Evidence);
        Assert.Equal(["attest.host.pending"], refused.Failures.Select(f => f.Id));

        var unknown = await Assert.ThrowsAsync<GuardianException>(() => _client.NonceAsync("host-not-enrolled"));
        Assert.Equal("attest.host.unknown", unknown.Id);
        Assert.Equal(404, unknown.Status);
    }

    [Fact]
    public async Task A_reboot_is_detected_and_reported()
    {
        using var host = await ApprovedHostAsync();
        Assert.False((await host.AttestAsync(_client)).RebootDetected);
        // An orderly reboot: TPM2_Shutdown(CLEAR), power-cycle (TPM_Init through swtpm's control
        // channel), Startup, and the same firmware boot again. (Without the orderly shutdown the
        // TPM reports its clock as not safe, which the Guardian refuses: attest.clock.unsafe.)
        using (var c = host.Tpm.RawClient())
        {
            c.Shutdown();
        }
        using (var ctrl = Rempart.Tpm.Transport.SwtpmControl.ConnectTcp("127.0.0.1", host.Tpm.Port + 1))
        {
            ctrl.Init();
        }
        using (var c = host.Tpm.RawClient())
        {
            c.Startup();
            SwtpmHost.Replay(c, host.EventLog);
        }
        var after = await host.AttestAsync(_client);
        Assert.True(after.Status == "affirming", string.Join("; ", after.Failures.Select(f => f.Id)));
        Assert.True(after.RebootDetected);
    }

    [Fact]
    public async Task Enrolment_refuses_an_EK_certificate_from_an_untrusted_CA_and_a_wrong_credential()
    {
        await using var untrusting = await GuardianFixture.StartAsync(trustSwtpmCa: false);
        using var client = new GuardianClient(untrusting.Url);
        using var host = new SwtpmHost();
        var e = await Assert.ThrowsAsync<GuardianException>(() => host.EnrolAsync(client));
        Assert.Equal("enrol.ek.untrusted-ca", e.Id);

        // A wrong answer to the credential challenge.
        Rempart.Attestation.Protocol.EnrolmentRequest req;
        using (var c = host.Tpm.Client())
        {
            req = new Rempart.Host.Attestation.HostIdentity(c).BuildRequest("hv");
        }
        var challenge = await _client.StartEnrolmentAsync(req);
        var wrong = await Assert.ThrowsAsync<GuardianException>(() =>
            _client.ActivateAsync(challenge.EnrolmentId, new Rempart.Attestation.Protocol.EnrolmentActivation(Convert.ToBase64String(new byte[32]))));
        Assert.Equal("enrol.credential.mismatch", wrong.Id);
        // The challenge is single use: even the right answer is refused now.
        var again = await Assert.ThrowsAsync<GuardianException>(() =>
            _client.ActivateAsync(challenge.EnrolmentId, new Rempart.Attestation.Protocol.EnrolmentActivation(Convert.ToBase64String(new byte[32]))));
        Assert.Equal("enrol.challenge.unknown", again.Id);
    }
}

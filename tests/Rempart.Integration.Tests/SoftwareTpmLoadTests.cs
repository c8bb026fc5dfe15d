using System.Security.Cryptography;
using Rempart.Attestation.Tests;
using Rempart.LoadGen;
using Rempart.Tpm.Crypto;

namespace Rempart.Integration.Tests;

/// <summary>
/// The load generator is a check too: its software TPMs enrol through the Guardian's API and are
/// affirmed by the unmodified Guardian, and one flipped byte in a quote is refused as
/// <c>quote.signature</c> — so the benchmark measures structures that are byte-exact and really verified.
/// </summary>
public sealed class SoftwareTpmLoadTests : IAsyncLifetime
{
    private const string Log = "go-tpm-tools__cos-85-amd-sev.bin";

    private GuardianFixture _g = null!;
    private SoftwareEkCa _ca = null!;
    private GuardianHttp _http = null!;
    private GuardianHttp _admin = null!;
    private SimulatedBoot _boot = null!;

    public async Task InitializeAsync()
    {
        _g = await GuardianFixture.StartAsync(trustSwtpmCa: false);
        _ca = new SoftwareEkCa();
        // The Guardian reads its trusted EK CAs at each enrolment.
        _ca.WritePem(Path.Combine(_g.DataDir, "trusted-ek-cas"));
        _http = new GuardianHttp(_g.Url, null);
        _admin = new GuardianHttp(_g.Url, null, adminToken: _g.AdminToken);
        _boot = new SimulatedBoot(Fixtures.Bytes(Log));
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        _admin.Dispose();
        _ca.Dispose();
        await _g.DisposeAsync();
    }

    private async Task<IReadOnlyList<EnrolledHost>> EnrolAsync(int count) =>
        await Fleet.EnrolAsync(_http, _admin, Fleet.Make(count, _ca, _boot, TextWriter.Null), "loadgen", Fleet.DefaultPolicy(_boot), 3, TextWriter.Null, CancellationToken.None);

    [Fact]
    public async Task Three_software_hosts_enrol_through_the_API_and_are_affirmed_under_the_group_policy()
    {
        var hosts = await EnrolAsync(3);
        Assert.Equal(3, hosts.Select(h => h.HostId).Distinct().Count());
        foreach (var host in hosts)
        {
            for (int i = 0; i < 2; i++)
            {
                var nonce = await _http.NonceAsync(host.HostId);
                var verdict = await _http.AttestAsync(host.Tpm.Evidence(host.HostId, nonce.Nonce));
                Assert.True(verdict.Status == "affirming", string.Join("; ", verdict.Failures.Select(f => $"{f.Id}: {f.Message}")));
                Assert.NotNull(verdict.Token);
            }
            host.Tpm.Dispose();
        }
        var audit = System.Text.Json.Nodes.JsonNode.Parse(await _admin.GetTextAsync("v1/audit/verify"))!;
        Assert.True(audit["ok"]!.GetValue<bool>());
    }

    [Fact]
    public async Task One_flipped_byte_in_the_software_quote_is_refused_as_quote_signature_and_leaves_the_host_healthy()
    {
        var host = (await EnrolAsync(1))[0];
        using var tpm = host.Tpm;
        var nonce = await _http.NonceAsync(host.HostId);
        var evidence = tpm.Evidence(host.HostId, nonce.Nonce);
        var quote = Convert.FromBase64String(evidence.Quote);
        // TPMS_ATTEST: magic(4) type(2) qualifiedSigner(2+34) extraData(2+32), then clockInfo.clock: still parses, no longer what the AK signed.
        quote[4 + 2 + 36 + 34 + 7] ^= 0x01;
        var tampered = await _http.AttestAsync(evidence with { Quote = Convert.ToBase64String(quote) });
        Assert.Equal("contraindicated", tampered.Status);
        Assert.Equal(["quote.signature"], tampered.Failures.Select(f => f.Id));
        Assert.Null(tampered.Token);

        // Evidence nobody proved came from the host's TPM does not change its state: the next honest attestation is affirmed.
        var again = await _http.NonceAsync(host.HostId);
        Assert.Equal("affirming", (await _http.AttestAsync(tpm.Evidence(host.HostId, again.Nonce))).Status);
    }

    [Fact]
    public void Software_ActivateCredential_is_the_inverse_of_MakeCredential_and_refuses_a_credential_for_another_AK()
    {
        using var tpm = new SoftwareTpm(_ca, _boot);
        var secret = RandomNumberGenerator.GetBytes(32);
        var (blob, encrypted) = Credential.Make(tpm.EkPublic, secret, tpm.AkName);
        Assert.Equal(secret, tpm.ActivateCredential(blob.Credential, encrypted.Secret));

        var otherName = (byte[])tpm.AkName.Clone();
        otherName[^1] ^= 0x01;
        var (foreign, foreignSecret) = Credential.Make(tpm.EkPublic, secret, otherName);
        Assert.ThrowsAny<CryptographicException>(() => tpm.ActivateCredential(foreign.Credential, foreignSecret.Secret));
    }
}

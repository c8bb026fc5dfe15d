using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Rempart.Attestation.Protocol;
using Rempart.Host.Attestation;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Templates;
using Rempart.Tpm.Tests.Infrastructure;
using Rempart.Tpm.Transport;

namespace Rempart.Host.Tests.Attestation;

/// <summary>
/// Enrolment against a real swtpm, the Guardian's side played in software with the
/// independent code in Rempart.Tpm (<see cref="Credential.Make"/>).
/// </summary>
public sealed class EnrolmentTests : IDisposable
{
    private readonly Swtpm _tpm = new("sha1,sha256");

    public void Dispose() => _tpm.Dispose();

    [Theory]
    [InlineData("rsa")]
    [InlineData("ecc")]
    public void The_request_presents_EK_certificate_and_AK_and_the_activation_recovers_the_Guardians_secret(string kind)
    {
        using var c = _tpm.Client();
        var request = new HostIdentity(c, kind, kind).BuildRequest("host-1.example");
        AssertNothingLoaded(c);

        Assert.Equal("host-1.example", request.Hostname);
        var ekPublic = TpmtPublic.ParseSized(Convert.FromBase64String(request.EkPublic));
        var akPublic = TpmtPublic.ParseSized(Convert.FromBase64String(request.AkPublic));
        Assert.Equal(KeyTemplates.Ek(kind).ObjectAttributes, ekPublic.ObjectAttributes);
        Assert.Equal(KeyTemplates.EkPolicy, ekPublic.AuthPolicy);
        Assert.Equal(KeyTemplates.AkAttributes, akPublic.ObjectAttributes);
        if (kind == "rsa")
        {
            Assert.NotNull(request.EkCertificate);
            using var cert = X509CertificateLoader.LoadCertificate(Convert.FromBase64String(request.EkCertificate!));
            using var certKey = cert.GetRSAPublicKey();
            Assert.Equal(((TpmBufferId)ekPublic.Unique).Buffer, certKey!.ExportParameters(false).Modulus);
        }
        else
        {
            // swtpm_setup certifies an ECC P-384 EK (NV 0x01C00016), not the L-2 P-256 EK: no certificate to present.
            Assert.Null(request.EkCertificate);
        }

        // The Guardian: a secret for the AK's Name, encrypted to the EK.
        var secret = RandomNumberGenerator.GetBytes(32);
        var (blob, encSecret) = Credential.Make(ekPublic, secret, akPublic.Name());
        var activation = new CredentialActivator(c, kind, kind).Answer(Challenge(blob, encSecret));
        Assert.Equal(secret, Convert.FromBase64String(activation.Secret));
        AssertNothingLoaded(c);
    }

    [Fact]
    public void A_challenge_made_for_another_AK_Name_fails_with_TPM_RC_INTEGRITY_and_leaves_nothing_loaded()
    {
        using var c = _tpm.Client();
        var identity = new HostIdentity(c).Read();
        var otherAk = new HostIdentity(c, akKind: "ecc").Read().AkPublic;
        Assert.NotEqual(identity.AkName, otherAk.Name());

        var (blob, encSecret) = Credential.Make(identity.EkPublic, RandomNumberGenerator.GetBytes(32), otherAk.Name());
        var e = Assert.Throws<TpmException>(() => new CredentialActivator(c).Answer(Challenge(blob, encSecret)));
        Assert.True(e.Is(TpmRc.Integrity), e.Message);
        AssertNothingLoaded(c);

        // The failure freed every slot: the right challenge still activates.
        var secret = RandomNumberGenerator.GetBytes(32);
        var (goodBlob, goodSecret) = Credential.Make(identity.EkPublic, secret, identity.AkName);
        Assert.Equal(secret, Convert.FromBase64String(new CredentialActivator(c).Answer(Challenge(goodBlob, goodSecret)).Secret));
    }

    [Fact]
    public void The_recovered_secret_never_crosses_the_TPM_bus_in_clear()
    {
        _tpm.FlushAll();
        var bus = new RecordingTransport(SwtpmTransport.ConnectTcp("127.0.0.1", _tpm.Port));
        using var c = new TpmClient(bus);
        var identity = new HostIdentity(c).Read();
        var secret = RandomNumberGenerator.GetBytes(32);
        var (blob, encSecret) = Credential.Make(identity.EkPublic, secret, identity.AkName);
        Assert.Equal(secret, Convert.FromBase64String(new CredentialActivator(c).Answer(Challenge(blob, encSecret)).Secret));
        Assert.Contains(bus.Exchanges, x => BinaryPrimitives.ReadUInt32BigEndian(x.Command.AsSpan(6)) == (uint)TpmCc.ActivateCredential);
        Assert.DoesNotContain(bus.Exchanges, x => x.Command.AsSpan().IndexOf(secret) >= 0 || x.Response.AsSpan().IndexOf(secret) >= 0);

        // Control: a bare ActivateCredential (no salted session) does show the secret on the bus.
        bus.Exchanges.Clear();
        var ek = c.CreateEk();
        var ak = c.CreateAk();
        var policy = c.StartEkPolicySession();
        c.ActivateCredential(ak.Handle!, ek.Handle!, blob, encSecret, keyAuth: policy);
        Assert.Contains(bus.Exchanges, x => x.Response.AsSpan().IndexOf(secret) >= 0);
        c.FlushSession(policy);
        c.FlushContext(ak.Handle!.Value);
        c.FlushContext(ek.Handle!.Value);
    }

    [Theory]
    [InlineData("not base64!", "AAAA")]
    [InlineData("", "AAAA")]
    [InlineData("AAAA", "")]
    public void A_malformed_challenge_is_a_FormatException_before_the_TPM_is_touched(string blob, string secret)
    {
        using var c = _tpm.Client();
        Assert.Throws<FormatException>(() => new CredentialActivator(c).Answer(new EnrolmentChallenge("e", blob, secret, DateTimeOffset.UnixEpoch)));
        AssertNothingLoaded(c);
    }

    private static EnrolmentChallenge Challenge(Tpm2bIdObject blob, Tpm2bEncryptedSecret secret) =>
        new("enrolment-1", Convert.ToBase64String(blob.Credential), Convert.ToBase64String(secret.Secret), DateTimeOffset.UtcNow.AddMinutes(5));

    internal static void AssertNothingLoaded(TpmClient c)
    {
        Assert.Empty(c.GetHandles(0x80000000));
        Assert.Empty(c.GetHandles(0x02000000));
        Assert.Empty(c.GetHandles(0x03000000));
    }
}

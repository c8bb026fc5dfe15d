using System.Security.Cryptography;
using System.Text;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Sessions;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Templates;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Tpm.Tests.Interop;

/// <summary>PolicyPCR sealing and salted parameter encryption, against a real swtpm.</summary>
public sealed class SealingTests : IDisposable
{
    private static readonly TpmlPcrSelection Pcrs = TpmlPcrSelection.Of(TpmAlgId.Sha256, 16, 23);
    private readonly Swtpm _tpm = new();

    public void Dispose() => _tpm.Dispose();

    private static byte[] SealPolicy(PcrValues v) =>
        new PolicyDigest(TpmAlgId.Sha256).PolicyPcr(Pcrs, PcrComposite.Digest(TpmAlgId.Sha256, Pcrs, (b, p) => v[b, p])).Digest;

    [Fact]
    public void A_PolicyPCR_sealed_secret_unseals_then_refuses_after_PCR_Extend()
    {
        var secret = RandomNumberGenerator.GetBytes(32);
        using var c = _tpm.Client();
        var srk = c.CreateSrk();
        c.EnableParameterEncryption(srk.Handle!, srk.Public);
        var values = c.PcrRead(Pcrs);
        var sealedObj = c.Create(srk.Handle!, KeyTemplates.SealedData(SealPolicy(values)), new TpmsSensitiveCreate([], secret));
        var item = c.Load(srk.Handle!, sealedObj.Private, sealedObj.Public);

        // The TPM's own trial computation agrees with our software policy digest.
        var trial = c.StartAuthSession(TpmSe.Trial);
        c.PolicyPcr(trial, [], Pcrs);
        Assert.Equal(sealedObj.Public.AuthPolicy, c.PolicyGetDigest(trial));
        c.FlushSession(trial);

        var s1 = c.StartAuthSession(TpmSe.Policy);
        c.PolicyPcr(s1, [], Pcrs);
        Assert.Equal(secret, c.Unseal(item, s1));
        c.FlushSession(s1);

        c.PcrExtend(16, new TpmlDigestValues([new TpmtHa(TpmAlgId.Sha256, SHA256.HashData("rempart"u8))]));

        var s2 = c.StartAuthSession(TpmSe.Policy);
        c.PolicyPcr(s2, [], Pcrs);
        var e = Assert.Throws<TpmException>(() => c.Unseal(item, s2));
        Assert.True(e.Is(TpmRc.PolicyFail), e.Message);
        Assert.Equal("session", e.Subject);
        Assert.Equal(1, e.SubjectIndex);
    }

    [Fact]
    public void PCR_Extend_gives_the_value_computed_in_software_in_every_bank()
    {
        using var c = _tpm.Client();
        var sel = new TpmlPcrSelection([new(TpmAlgId.Sha1, [16]), new(TpmAlgId.Sha256, [16]), new(TpmAlgId.Sha384, [16])]);
        var before = c.PcrRead(sel);
        var data = "event"u8.ToArray();
        var digests = new[] { TpmAlgId.Sha1, TpmAlgId.Sha256, TpmAlgId.Sha384 }.Select(a => new TpmtHa(a, TpmHash.Hash(a, data))).ToList();
        c.PcrExtend(16, new TpmlDigestValues(digests));
        var after = c.PcrRead(sel);
        foreach (var d in digests)
        {
            Assert.Equal(PcrComposite.Extend(d.HashAlg, before[d.HashAlg, 16], d.Digest), after[d.HashAlg, 16]);
        }
    }

    [Fact]
    public void With_parameter_encryption_the_secret_never_crosses_the_bus_in_clear()
    {
        var marker = Encoding.ASCII.GetBytes("REMPART-SECRET-MARKER-" + Convert.ToHexString(RandomNumberGenerator.GetBytes(8)));
        _tpm.FlushAll();

        // Control: without parameter encryption the capture does contain the marker.
        var plain = new RecordingTransport(Transport.SwtpmTransport.ConnectTcp("127.0.0.1", _tpm.Port));
        using (var c = new TpmClient(plain))
        {
            SealAndUnseal(c, marker, encrypt: false);
        }
        Assert.Contains(plain.Exchanges, x => Contains(x.Command, marker));
        Assert.Contains(plain.Exchanges, x => Contains(x.Response, marker));

        _tpm.FlushAll();
        var bus = new RecordingTransport(Transport.SwtpmTransport.ConnectTcp("127.0.0.1", _tpm.Port));
        using (var c = new TpmClient(bus))
        {
            Assert.Equal(marker, SealAndUnseal(c, marker, encrypt: true));
        }
        Assert.NotEmpty(bus.Exchanges);
        Assert.DoesNotContain(bus.Exchanges, x => Contains(x.Command, marker) || Contains(x.Response, marker));
    }

    private static byte[] SealAndUnseal(TpmClient c, byte[] secret, bool encrypt)
    {
        var srk = c.CreateSrk();
        if (encrypt)
        {
            c.EnableParameterEncryption(srk.Handle!, srk.Public);
        }
        var obj = c.Create(srk.Handle!, KeyTemplates.SealedData(new PolicyDigest(TpmAlgId.Sha256).PolicyAuthValue().Digest), new TpmsSensitiveCreate([], secret));
        var item = c.Load(srk.Handle!, obj.Private, obj.Public);
        var s = c.StartAuthSession(TpmSe.Policy);
        c.PolicyAuthValue(s);
        var result = c.Unseal(item, s);
        c.FlushSession(s);
        return result;
    }

    [Fact]
    public void A_wrong_authValue_on_a_salted_HMAC_session_is_a_typed_auth_failure()
    {
        using var c = _tpm.Client();
        var srk = c.CreateSrk();
        var auth = Encoding.ASCII.GetBytes("correct horse");
        var obj = c.Create(srk.Handle!, KeyTemplates.SealedData([]) with { ObjectAttributes = TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.UserWithAuth },
            new TpmsSensitiveCreate(auth, "data"u8.ToArray()));
        var item = c.Load(srk.Handle!, obj.Private, obj.Public, auth);
        var hmac = c.StartAuthSession(TpmSe.Hmac, TpmAlgId.Sha256, (srk.Handle!, srk.Public), TpmtSymDef.Aes128Cfb, TpmaSession.Encrypt);
        Assert.Equal("data"u8.ToArray(), c.Unseal(item, hmac));
        var wrong = new TpmHandle(item.Value, item.Name, Encoding.ASCII.GetBytes("wrong"));
        var e = Assert.Throws<TpmException>(() => c.Unseal(wrong, hmac));
        Assert.True(e.Is(TpmRc.AuthFail), e.Message);
    }

    private static bool Contains(byte[] haystack, byte[] needle) => haystack.AsSpan().IndexOf(needle) >= 0;
}

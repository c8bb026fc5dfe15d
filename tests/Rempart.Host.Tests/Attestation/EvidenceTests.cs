using System.Security.Cryptography;
using Rempart.Attestation.Protocol;
using Rempart.Host.Attestation;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;
using Rempart.Host.Tests.Infrastructure;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Host.Tests.Attestation;

/// <summary>
/// Evidence from a real swtpm, checked as the Guardian would with the independent verifier in
/// Rempart.Tpm (never with the collector's own checks), and the binding key used through its
/// PCR policy before and after a PCR changes.
/// </summary>
public sealed class EvidenceTests : IDisposable
{
    private static readonly TpmlPcrSelection Sha256Pcr0To7 = TpmlPcrSelection.Of(TpmAlgId.Sha256, 0, 1, 2, 3, 4, 5, 6, 7);
    private static readonly TpmtScheme Oaep = new(TpmAlgId.Oaep, TpmAlgId.Sha256);
    private readonly Swtpm _tpm = new("sha1,sha256");

    public void Dispose() => _tpm.Dispose();

    [Fact]
    public void Quote_and_binding_key_certification_verify_and_the_binding_key_is_as_specified()
    {
        using var c = _tpm.Client();
        var akPublic = new HostIdentity(c).Read().AkPublic;
        var nonce = RandomNumberGenerator.GetBytes(32);
        var collected = new EvidenceCollector(c).Collect("host-1", nonce, []);
        var evidence = collected.Evidence;
        EnrolmentTests.AssertNothingLoaded(c);

        Assert.Equal("host-1", evidence.HostId);
        Assert.Equal(Convert.ToHexStringLower(nonce), evidence.Nonce);
        Assert.Equal("", evidence.EventLog);

        // All PCRs of all allocated banks, and the quote over exactly those values.
        var pcrs = Reported(evidence);
        Assert.Equal([TpmAlgId.Sha1, TpmAlgId.Sha256], pcrs.Keys.Order());
        Assert.All(pcrs.Values, bank => Assert.Equal(Enumerable.Range(0, 24), bank.Keys.Order()));
        var quote = AttestationVerifier.VerifyQuote(akPublic, Convert.FromBase64String(evidence.Quote),
            TpmtSignature.Parse(Convert.FromBase64String(evidence.QuoteSignature)), nonce, Lookup(pcrs));
        Assert.True(quote.Valid, quote.ToString());
        Assert.Equal(48, ((TpmsQuoteInfo)quote.Attest!.Attested).PcrSelect.TotalPcrs);
        var wrongNonce = AttestationVerifier.VerifyQuote(akPublic, Convert.FromBase64String(evidence.Quote),
            TpmtSignature.Parse(Convert.FromBase64String(evidence.QuoteSignature)), RandomNumberGenerator.GetBytes(32), Lookup(pcrs));
        Assert.Equal(["quote.nonce"], wrongNonce.Failures.Select(f => f.Id));

        // The binding key: certified by the AK with the same nonce, bound to this TPM and parent, PCR-policy only.
        var bindingKey = TpmtPublic.ParseSized(Convert.FromBase64String(evidence.BindingKeyPublic));
        Assert.Equal(collected.BindingKeyPublic.ToBytes(), bindingKey.ToBytes());
        var certify = AttestationVerifier.VerifyCertify(akPublic, Convert.FromBase64String(evidence.BindingKeyCertify),
            TpmtSignature.Parse(Convert.FromBase64String(evidence.BindingKeyCertifySignature)), nonce, bindingKey);
        Assert.True(certify.Valid, certify.ToString());
        Assert.Equal(TpmAlgId.Rsa, bindingKey.Type);
        Assert.Equal(TpmAlgId.Sha256, bindingKey.NameAlg);
        Assert.Equal(TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.SensitiveDataOrigin | TpmaObject.Decrypt | TpmaObject.NoDa,
            bindingKey.ObjectAttributes);
        var rsa = Assert.IsType<TpmsRsaParms>(bindingKey.Parameters);
        Assert.Equal(2048, rsa.KeyBits);
        Assert.Equal(TpmtSymDef.Null, rsa.Symmetric);
        var expectedPolicy = new PolicyDigest(TpmAlgId.Sha256)
            .PolicyPcr(Sha256Pcr0To7, PcrComposite.Digest(TpmAlgId.Sha256, Sha256Pcr0To7, Lookup(pcrs))).Digest;
        Assert.Equal(expectedPolicy, bindingKey.AuthPolicy);
        Assert.Equal(Sha256Pcr0To7.ToString(), collected.BindingPcrs.ToString());
    }

    [Fact]
    public void The_binding_key_decrypts_through_its_PCR_policy_until_PCR7_is_extended()
    {
        using var c = _tpm.Client();
        var collected = new EvidenceCollector(c).Collect("host-1", RandomNumberGenerator.GetBytes(32), []);
        var message = RandomNumberGenerator.GetBytes(32);
        var cipher = SecretSharing.RsaOaepEncrypt(collected.BindingKeyPublic, message, "REMPART-VMK");
        byte[] label = [.. "REMPART-VMK"u8, 0];

        var srk = c.CreateSrk();
        var key = c.Load(srk.Handle!, collected.BindingKeyPrivate, collected.BindingKeyPublic);
        c.FlushContext(srk.Handle!.Value);

        // No userWithAuth: the key's (empty) authValue alone does not authorise its use.
        var noPolicy = Assert.Throws<TpmException>(() => c.RsaDecrypt(key, cipher, Oaep, label));
        Assert.True(noPolicy.Is(TpmRc.AuthUnavailable), noPolicy.Message);

        var before = c.StartAuthSession(TpmSe.Policy);
        c.PolicyPcr(before, [], collected.BindingPcrs);
        Assert.Equal(message, c.RsaDecrypt(key, cipher, Oaep, label, before));
        c.FlushSession(before);

        c.PcrExtend(7, new TpmlDigestValues([
            new TpmtHa(TpmAlgId.Sha1, SHA1.HashData("another boot"u8)),
            new TpmtHa(TpmAlgId.Sha256, SHA256.HashData("another boot"u8))]));

        var after = c.StartAuthSession(TpmSe.Policy);
        c.PolicyPcr(after, [], collected.BindingPcrs);
        var e = Assert.Throws<TpmException>(() => c.RsaDecrypt(key, cipher, Oaep, label, after));
        Assert.True(e.Is(TpmRc.PolicyFail), e.Message);
        c.FlushSession(after);
        c.FlushContext(key.Value);
    }

    [Fact]
    public void PCRs_that_change_around_the_quote_are_quoted_again_and_the_values_sent_are_those_quoted()
    {
        _tpm.FlushAll();
        var extender = new ExtendBeforeQuote(Tpm.Transport.SwtpmTransport.ConnectTcp("127.0.0.1", _tpm.Port), times: 2);
        using var c = new TpmClient(extender);
        var akPublic = new HostIdentity(c).Read().AkPublic;
        var nonce = RandomNumberGenerator.GetBytes(32);
        var evidence = new EvidenceCollector(c).Collect("host-1", nonce, []).Evidence;

        Assert.Equal(3, extender.Quotes);
        var pcrs = Reported(evidence);
        var pcr16 = new byte[32];
        for (int i = 0; i < extender.Extends; i++)
        {
            pcr16 = PcrComposite.Extend(TpmAlgId.Sha256, pcr16, ExtendBeforeQuote.Digest(TpmAlgId.Sha256));
        }
        Assert.Equal(pcr16, pcrs[TpmAlgId.Sha256][16]);
        var quote = AttestationVerifier.VerifyQuote(akPublic, Convert.FromBase64String(evidence.Quote),
            TpmtSignature.Parse(Convert.FromBase64String(evidence.QuoteSignature)), nonce, Lookup(pcrs));
        Assert.True(quote.Valid, quote.ToString());
    }

    [Fact]
    public void PCRs_that_keep_changing_give_up_after_the_bound_and_leave_nothing_loaded()
    {
        _tpm.FlushAll();
        var extender = new ExtendBeforeQuote(Tpm.Transport.SwtpmTransport.ConnectTcp("127.0.0.1", _tpm.Port), times: int.MaxValue);
        using var c = new TpmClient(extender);
        var e = Assert.Throws<EvidenceCollectionException>(() => new EvidenceCollector(c, maxQuoteAttempts: 3).Collect("host-1", [1, 2, 3], []));
        Assert.Equal("evidence.pcrs-unstable", e.Id);
        Assert.Equal(3, extender.Quotes);
        EnrolmentTests.AssertNothingLoaded(c);
    }

    [Fact]
    public void A_missing_nonce_or_an_unallocated_binding_bank_is_refused()
    {
        using var c = _tpm.Client();
        Assert.Throws<ArgumentException>(() => new EvidenceCollector(c).Collect("host-1", [], []));
        var e = Assert.Throws<EvidenceCollectionException>(() =>
            new EvidenceCollector(c, TpmlPcrSelection.Of(TpmAlgId.Sha384, 7)).Collect("host-1", [1], []));
        Assert.Equal("evidence.binding-pcrs", e.Id);
        EnrolmentTests.AssertNothingLoaded(c);
    }

    /// <summary>The reported PCRs, parsed as the Guardian would: bank name → index → hex.</summary>
    internal static Dictionary<TpmAlgId, Dictionary<int, byte[]>> Reported(AttestationEvidence evidence) =>
        evidence.Pcrs.ToDictionary(
            b => TpmHash.TryParse(b.Key, out var alg) ? alg : throw new FormatException($"bank {b.Key}"),
            b => b.Value.ToDictionary(p => int.Parse(p.Key, System.Globalization.CultureInfo.InvariantCulture), p => Convert.FromHexString(p.Value)));

    internal static Func<TpmAlgId, int, byte[]?> Lookup(Dictionary<TpmAlgId, Dictionary<int, byte[]>> pcrs) =>
        (b, p) => pcrs.TryGetValue(b, out var m) && m.TryGetValue(p, out var v) ? v : null;
}

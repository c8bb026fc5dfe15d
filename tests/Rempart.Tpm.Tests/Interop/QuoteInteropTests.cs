using System.Security.Cryptography;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Tpm.Tests.Interop;

/// <summary>Quotes cross-checked with tpm2-tools in both directions, against a real swtpm.</summary>
public sealed class QuoteInteropTests : IDisposable
{
    private readonly Swtpm _tpm = new();
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-quote-").FullName;

    public void Dispose()
    {
        _tpm.Dispose();
        Directory.Delete(_dir, true);
    }

    private string F(string name) => Path.Combine(_dir, name);

    [Theory]
    [InlineData("rsa")]
    [InlineData("ecc")]
    public void Our_quote_passes_tpm2_checkquote_and_a_wrong_nonce_fails_it(string kind)
    {
        var nonce = RandomNumberGenerator.GetBytes(20);
        using (var c = _tpm.Client())
        {
            var ak = c.CreateAk(kind);
            var q = c.Quote(ak.Handle!, nonce, new TpmlPcrSelection([new(TpmAlgId.Sha256, [0, 1, 2, 3, 16]), new(TpmAlgId.Sha1, [0, 7])]));
            File.WriteAllText(F("ak.pem"), KeyConversion.ToPem(ak.Public));
            File.WriteAllBytes(F("quote.msg"), q.Message);
            File.WriteAllBytes(F("quote.sig"), q.Signature.ToBytes());
        }
        var ok = Tool.Run("tpm2_checkquote", ["-u", F("ak.pem"), "-m", F("quote.msg"), "-s", F("quote.sig"), "-g", "sha256", "-q", Convert.ToHexStringLower(nonce)]);
        Assert.True(ok.ExitCode == 0, ok.Stderr);
        var wrong = (byte[])nonce.Clone();
        wrong[0] ^= 0xff; // always differs ("00" + the rest was the same nonce when it began with 00: 1 run in 256)
        var bad = Tool.Run("tpm2_checkquote", ["-u", F("ak.pem"), "-m", F("quote.msg"), "-s", F("quote.sig"), "-g", "sha256", "-q", Convert.ToHexStringLower(wrong)]);
        Assert.NotEqual(0, bad.ExitCode);
    }

    [Theory]
    [InlineData("rsa", "rsassa")]
    [InlineData("ecc", "ecdsa")]
    public void A_tpm2_tools_quote_passes_our_verifier_and_tampering_is_named(string kind, string scheme)
    {
        var nonce = RandomNumberGenerator.GetBytes(16);
        _tpm.Tpm2("tpm2_createek", "-c", F("ek.ctx"), "-G", kind, "-u", F("ek.pub")).Ok();
        _tpm.Tpm2("tpm2_createak", "-C", F("ek.ctx"), "-c", F("ak.ctx"), "-G", kind, "-g", "sha256", "-s", scheme, "-u", F("ak.pub"), "-n", F("ak.name")).Ok();
        _tpm.Tpm2("tpm2_quote", "-c", F("ak.ctx"), "-l", "sha256:0,1,2,3,4,5,6,7", "-q", Convert.ToHexStringLower(nonce),
            "-m", F("quote.msg"), "-s", F("quote.sig"), "-g", "sha256").Ok();

        var ak = TpmtPublic.ParseSized(File.ReadAllBytes(F("ak.pub")));
        var msg = File.ReadAllBytes(F("quote.msg"));
        var sig = TpmtSignature.Parse(File.ReadAllBytes(F("quote.sig")));
        Assert.Equal(kind == "rsa" ? TpmAlgId.RsaSsa : TpmAlgId.EcDsa, sig.SigAlg);

        PcrValues pcrs;
        using (var c = _tpm.Client())
        {
            pcrs = c.PcrRead(TpmlPcrSelection.Of(TpmAlgId.Sha256, 0, 1, 2, 3, 4, 5, 6, 7));
        }
        byte[]? Value(TpmAlgId b, int p) => pcrs.Banks.TryGetValue(b, out var m) && m.TryGetValue(p, out var v) ? v : null;

        var good = AttestationVerifier.VerifyQuote(ak, msg, sig, nonce, Value);
        Assert.True(good.Valid, good.ToString());

        var flipped = (byte[])msg.Clone();
        flipped[^1] ^= 1; // last byte of the PCR digest
        var r1 = AttestationVerifier.VerifyQuote(ak, flipped, sig, nonce, Value);
        Assert.Contains(r1.Failures, f => f.Id == "quote.signature");
        Assert.Contains(r1.Failures, f => f.Id == "quote.pcr-digest");

        var badSig = sig.SigAlg == TpmAlgId.RsaSsa
            ? sig with { Rsa = Flip(sig.Rsa) }
            : sig with { S = Flip(sig.S) };
        var r2 = AttestationVerifier.VerifyQuote(ak, msg, badSig, nonce, Value);
        Assert.Equal(["quote.signature"], r2.Failures.Select(f => f.Id));

        var otherNonce = (byte[])nonce.Clone();
        otherNonce[0] ^= 0x80;
        var r3 = AttestationVerifier.VerifyQuote(ak, msg, sig, otherNonce, Value);
        Assert.Equal(["quote.nonce"], r3.Failures.Select(f => f.Id));

        var r4 = AttestationVerifier.VerifyQuote(ak, msg, sig, [], Value);
        Assert.Equal(["quote.nonce"], r4.Failures.Select(f => f.Id));
    }

    private static byte[] Flip(byte[] b)
    {
        var c = (byte[])b.Clone();
        c[c.Length / 2] ^= 0x01;
        return c;
    }
}

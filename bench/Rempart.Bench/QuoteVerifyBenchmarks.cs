using System.Security.Cryptography;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Templates;

namespace Rempart.Bench;

/// <summary>
/// TPM quote verifications per second (<see cref="AttestationVerifier.VerifyQuote"/>: signature,
/// parsing, magic, type, nonce and PCR digest over sha256:0-23) next to the bare .NET signature
/// verification of the same message with a pre-created key, so each quote benchmark's Ratio is
/// its cost relative to the raw signature check alone. Inputs are built entirely in software.
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class QuoteVerifyBenchmarks
{
    private const string Rsa = "RSA-2048";
    private const string Ecc = "ECC-P256";

    private readonly Dictionary<int, byte[]> _pcrs = [];
    private Func<TpmAlgId, int, byte[]?> _pcrValues = null!;
    private byte[] _nonce = [];

    private RSA _rsa = null!;
    private TpmtPublic _rsaAk = null!;
    private byte[] _rsaMessage = [];
    private byte[] _rsaSig = [];
    private TpmtSignature _rsaTpmSig = null!;

    private VerificationKey _rsaKey = null!;
    private VerificationKey _eccKey = null!;

    private ECDsa _ecdsa = null!;
    private TpmtPublic _eccAk = null!;
    private byte[] _eccMessage = [];
    private byte[] _eccSig = [];
    private TpmtSignature _eccTpmSig = null!;

    [GlobalSetup]
    public void Setup()
    {
        // PCR values: 24 distinct sha256 digests, as a verifier would hold from an event log.
        for (int i = 0; i < 24; i++)
        {
            _pcrs[i] = SHA256.HashData([(byte)i]);
        }
        _pcrValues = (bank, pcr) => bank == TpmAlgId.Sha256 && _pcrs.TryGetValue(pcr, out var v) ? v : null;
        _nonce = RandomNumberGenerator.GetBytes(32);

        // RSA-2048 AK. The raw baseline uses a public-only key object, like the verifier does.
        using (var rsaPriv = System.Security.Cryptography.RSA.Create(2048))
        {
            var pub = rsaPriv.ExportParameters(false);
            _rsaAk = KeyTemplates.AkRsa2048 with { Unique = new TpmBufferId(pub.Modulus!) };
            _rsaMessage = MakeQuote(_rsaAk);
            _rsaSig = rsaPriv.SignData(_rsaMessage, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
            _rsa = System.Security.Cryptography.RSA.Create(pub);
        }
        _rsaTpmSig = TpmtSignature.RsaSignature(TpmAlgId.RsaSsa, TpmAlgId.Sha256, _rsaSig);

        // ECC P-256 AK.
        using (var ecPriv = ECDsa.Create(ECCurve.NamedCurves.nistP256))
        {
            var pub = ecPriv.ExportParameters(false);
            _eccAk = KeyTemplates.AkEccP256 with { Unique = new TpmsEccPoint(pub.Q.X!, pub.Q.Y!) };
            _eccMessage = MakeQuote(_eccAk);
            _eccSig = ecPriv.SignData(_eccMessage, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
            _ecdsa = ECDsa.Create(pub);
        }
        _eccTpmSig = TpmtSignature.EccSignature(TpmAlgId.EcDsa, TpmAlgId.Sha256, _eccSig[..32], _eccSig[32..]);

        _rsaKey = new VerificationKey(_rsaAk);
        _eccKey = new VerificationKey(_eccAk);

        // Never measure a failing path.
        Require(RawRsaVerify(), "raw RSA verification");
        Require(RawEcdsaVerify(), "raw ECDSA verification");
        var rsaResult = QuoteVerifyRsa();
        Require(rsaResult.Valid, $"RSA quote verification: {rsaResult}");
        var eccResult = QuoteVerifyEcc();
        Require(eccResult.Valid, $"ECC quote verification: {eccResult}");
        Require(QuoteVerifyRsaImportedKey().Valid, "RSA quote verification with an imported key");
        Require(QuoteVerifyEccImportedKey().Valid, "ECC quote verification with an imported key");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _rsa.Dispose();
        _ecdsa.Dispose();
        _rsaKey.Dispose();
        _eccKey.Dispose();
    }

    [Benchmark(Baseline = true), BenchmarkCategory(Rsa)]
    public bool RawRsaVerify() => _rsa.VerifyData(_rsaMessage, _rsaSig, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);

    [Benchmark, BenchmarkCategory(Rsa)]
    public VerificationResult QuoteVerifyRsa() => AttestationVerifier.VerifyQuote(_rsaAk, _rsaMessage, _rsaTpmSig, _nonce, _pcrValues);

    [Benchmark, BenchmarkCategory(Rsa)]
    public VerificationResult QuoteVerifyRsaImportedKey() => AttestationVerifier.VerifyQuote(_rsaKey, _rsaMessage, _rsaTpmSig, _nonce, _pcrValues);

    [Benchmark(Baseline = true), BenchmarkCategory(Ecc)]
    public bool RawEcdsaVerify() => _ecdsa.VerifyData(_eccMessage, _eccSig, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);

    [Benchmark, BenchmarkCategory(Ecc)]
    public VerificationResult QuoteVerifyEcc() => AttestationVerifier.VerifyQuote(_eccAk, _eccMessage, _eccTpmSig, _nonce, _pcrValues);

    [Benchmark, BenchmarkCategory(Ecc)]
    public VerificationResult QuoteVerifyEccImportedKey() => AttestationVerifier.VerifyQuote(_eccKey, _eccMessage, _eccTpmSig, _nonce, _pcrValues);

    private byte[] MakeQuote(TpmtPublic ak)
    {
        var selection = TpmlPcrSelection.Of(TpmAlgId.Sha256, [.. Enumerable.Range(0, 24)]);
        var digest = PcrComposite.Digest(TpmAlgId.Sha256, selection, _pcrValues);
        var attest = new TpmsAttest(
            TpmConstants.Generated,
            TpmSt.AttestQuote,
            QualifiedSigner: ak.Name(), // stands in for the qualified name; the verifier does not check it
            ExtraData: _nonce,
            ClockInfo: new TpmsClockInfo(123456789, 1, 0, true),
            FirmwareVersion: 0x0001_0002_0003_0004,
            Attested: new TpmsQuoteInfo(selection, digest));
        return attest.ToBytes();
    }

    private static void Require(bool condition, string what)
    {
        if (!condition)
        {
            throw new InvalidOperationException($"benchmark setup: {what} failed");
        }
    }
}

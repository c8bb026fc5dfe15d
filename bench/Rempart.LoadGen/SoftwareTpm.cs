using System.Numerics;
using System.Security.Cryptography;
using Rempart.Attestation.Protocol;
using Rempart.Host.Attestation;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Templates;

namespace Rempart.LoadGen;

/// <summary>The TPM output one attestation needs: a quote and a certification of the binding key, each with its signature.</summary>
public sealed record SoftwareTpmOutput(byte[] Quote, byte[] QuoteSignature, byte[] Certify, byte[] CertifySignature);

/// <summary>
/// A TPM played in <b>software</b>, for the load generator and its tests only — never a host's TPM.
/// Its keys are .NET keys in this process, so it proves nothing about any machine; what it does
/// prove is that the Guardian, unmodified, verifies byte-exact TPM structures at load:
/// <list type="bullet">
/// <item>EK: RSA-2048, TPMT_PUBLIC exactly the EK Credential Profile template L-1
/// (<see cref="KeyTemplates.EkRsa2048"/>) with the real modulus, certified by <see cref="SoftwareEkCa"/>;</item>
/// <item>AK: ECC NIST P-256, exactly <see cref="KeyTemplates.AkEccP256"/> with the real point, ECDSA-SHA256;</item>
/// <item>TPM2_ActivateCredential (Part 3, §12.5) in software: the inverse of <see cref="Credential.Make"/>;</item>
/// <item>TPM2_Quote (Part 3, §18.4): TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE over all 24 PCRs of every
/// bank of <see cref="SimulatedBoot"/>, the nonce as extraData, a clock that only moves forward;</item>
/// <item>a binding key made as <see cref="EvidenceCollector"/> makes it (same template, PolicyPCR over the
/// quoted sha256 PCRs 0–7) and TPM2_Certify (Part 3, §18.2) of it by the AK over the same nonce.</item>
/// </list>
/// Not thread-safe for one instance: a host attests one nonce at a time (the Guardian refuses a clock
/// that goes back, which interleaved quotes of one TPM could produce).
/// </summary>
public sealed class SoftwareTpm : IDisposable
{
    /// <summary>TPMS_ATTEST.firmwareVersion the software TPMs report (vendor-specific; 1.2.3.4 here).</summary>
    public const ulong FirmwareVersion = 0x0001_0002_0003_0004;

    private static readonly TimeProvider Time = TimeProvider.System;

    private readonly RSA _ek;
    private readonly ECDsa _ak;
    private readonly long _startedAt;
    private readonly ulong _clockAtStart;
    private readonly string _bindingKeyPublicBase64;
    private ulong _lastClock;

    /// <param name="ca">Issues the EK certificate.</param>
    /// <param name="boot">The boot this host went through (PCR values and event log).</param>
    /// <param name="resetCount">TPMS_CLOCK_INFO.resetCount: TPM resets since the TPM was made (stable: no reboot).</param>
    /// <param name="bindingKey">The binding key (RSA-2048), kept by the caller to open what the Guardian releases to it;
    /// by default a fresh one whose private part is dropped.</param>
    public SoftwareTpm(SoftwareEkCa ca, SimulatedBoot boot, uint resetCount = 7, RSA? bindingKey = null)
    {
        ArgumentNullException.ThrowIfNull(ca);
        ArgumentNullException.ThrowIfNull(boot);
        Boot = boot;
        ResetCount = resetCount;

        _ek = RSA.Create(2048);
        var ek = _ek.ExportParameters(false);
        if (!ek.Exponent!.AsSpan().SequenceEqual(new byte[] { 1, 0, 1 }))
        {
            throw new CryptographicException("the EK template's exponent is 0 (65537); .NET made another");
        }
        EkPublic = KeyTemplates.EkRsa2048.WithUnique(new TpmBufferId(ek.Modulus!));
        EkCertificate = ca.IssueEkCertificate(_ek);

        _ak = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var q = _ak.ExportParameters(false).Q;
        AkPublic = KeyTemplates.AkEccP256.WithUnique(new TpmsEccPoint(q.X!, q.Y!));
        AkName = AkPublic.Name();

        // The binding key's parent: an ECC P-256 SRK (Provisioning Guidance template) in the owner hierarchy.
        TpmtPublic srk;
        using (var srkKey = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256))
        {
            var p = srkKey.ExportParameters(false).Q;
            srk = KeyTemplates.SrkEccP256.WithUnique(new TpmsEccPoint(p.X!, p.Y!));
        }
        // The binding key: its private part would stay in the TPM; unless the caller gave it, nothing here keeps it.
        using (var fresh = bindingKey is null ? RSA.Create(2048) : null)
        {
            var binding = bindingKey ?? fresh!;
            BindingKeyPublic = EvidenceCollector.BindingKeyTemplate(boot.BindingPolicy).WithUnique(new TpmBufferId(binding.ExportParameters(false).Modulus!));
        }
        BindingKeyName = BindingKeyPublic.Name();
        _bindingKeyPublicBase64 = Convert.ToBase64String(BindingKeyPublic.ToSizedBytes());
        // Qualified Names (Part 1, §16): QN(primary) = H(handle of hierarchy ‖ Name), QN(child) = H(QN(parent) ‖ Name).
        BindingKeyQualifiedName = QualifiedName(QualifiedName(TpmHandle.HandleName(TpmRh.Owner), srk.Name()), BindingKeyName);

        _startedAt = Time.GetTimestamp();
        _clockAtStart = (ulong)RandomNumberGenerator.GetInt32(1_000_000, 1_000_000_000);
    }

    public SimulatedBoot Boot { get; }

    public uint ResetCount { get; }

    /// <summary>TPMS_CLOCK_INFO.restartCount: stable (no TPM2_Shutdown(STATE) / Startup(STATE) cycle).</summary>
    public uint RestartCount => 0;

    public TpmtPublic EkPublic { get; }

    /// <summary>The EK certificate, DER.</summary>
    public byte[] EkCertificate { get; }

    public TpmtPublic AkPublic { get; }

    public byte[] AkName { get; }

    public TpmtPublic BindingKeyPublic { get; }

    public byte[] BindingKeyName { get; }

    public byte[] BindingKeyQualifiedName { get; }

    /// <summary>POST /v1/enrolments: TPM2B_PUBLIC of EK and AK and the EK certificate, base64.</summary>
    public EnrolmentRequest EnrolmentRequest(string hostname) => new(
        hostname,
        Convert.ToBase64String(EkPublic.ToSizedBytes()),
        Convert.ToBase64String(EkCertificate),
        Convert.ToBase64String(AkPublic.ToSizedBytes()));

    /// <summary>Answers the Guardian's enrolment challenge (POST /v1/enrolments/{id}/activate).</summary>
    /// <exception cref="CryptographicException">The challenge was not made for this EK and AK (TPM_RC_INTEGRITY, or the seed does not decrypt).</exception>
    public EnrolmentActivation Answer(EnrolmentChallenge challenge)
    {
        ArgumentNullException.ThrowIfNull(challenge);
        var secret = ActivateCredential(Convert.FromBase64String(challenge.CredentialBlob), Convert.FromBase64String(challenge.EncryptedSecret));
        try
        {
            return new EnrolmentActivation(Convert.ToBase64String(secret));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
        }
    }

    /// <summary>
    /// TPM2_ActivateCredential (Part 3, §12.5; Part 1, §24) for the AK, in software: the seed is
    /// RSA-OAEP-decrypted with the EK (SHA-256, label "IDENTITY\0"); HMACkey = KDFa(seed,
    /// "INTEGRITY"); the blob's integrity must be HMAC(HMACkey, encIdentity ‖ Name(AK));
    /// symKey = KDFa(seed, "STORAGE", Name(AK)); AES-128-CFB (IV 0) decrypts encIdentity to TPM2B(credential).
    /// </summary>
    public byte[] ActivateCredential(ReadOnlySpan<byte> credentialBlob, ReadOnlySpan<byte> encryptedSecret)
    {
        var hash = EkPublic.NameAlg;
        var sym = ((TpmsRsaParms)EkPublic.Parameters).Symmetric;
        var seed = OaepDecrypt(encryptedSecret, "IDENTITY");
        var hmacKey = Kdf.KdfA(hash, seed, "INTEGRITY", [], [], TpmHash.DigestSize(hash) * 8);
        var symKey = Kdf.KdfA(hash, seed, "STORAGE", AkName, [], sym.KeyBits);
        try
        {
            var r = new TpmReader(credentialBlob);
            var integrity = r.ReadSized("TPM2B_ID_OBJECT.integrityHMAC", TpmConstants.MaxDigestSize);
            var encIdentity = r.ReadBytes(r.Remaining, "TPM2B_ID_OBJECT.encIdentity");
            var expected = TpmHash.Hmac(hash, hmacKey, [.. encIdentity, .. AkName]);
            if (!CryptographicOperations.FixedTimeEquals(expected, integrity))
            {
                throw new CryptographicException("TPM_RC_INTEGRITY: the credential was not made for this AK and EK");
            }
            AesCfb.Decrypt(symKey, new byte[16], encIdentity);
            var inner = new TpmReader(encIdentity);
            var credential = inner.ReadSized("TPM2B_DIGEST credential", TpmHash.DigestSize(hash));
            inner.ExpectEnd("encIdentity");
            CryptographicOperations.ZeroMemory(encIdentity);
            return credential;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(seed);
            CryptographicOperations.ZeroMemory(hmacKey);
            CryptographicOperations.ZeroMemory(symKey);
        }
    }

    /// <summary>
    /// TPM2_Quote then TPM2_Certify of the binding key, both by the AK over <paramref name="nonce"/>
    /// (TPMS_ATTEST, Part 2 §10.12.12: TPM_GENERATED_VALUE, the type, qualifiedSigner = Name(AK),
    /// extraData = nonce, clockInfo, firmwareVersion, then TPMS_QUOTE_INFO or TPMS_CERTIFY_INFO),
    /// each signed ECDSA P-256 over SHA-256 of its bytes and wrapped as TPMT_SIGNATURE.
    /// </summary>
    public SoftwareTpmOutput QuoteAndCertify(ReadOnlySpan<byte> nonce)
    {
        if (nonce.IsEmpty || nonce.Length > TpmConstants.MaxDigestSize)
        {
            throw new ArgumentException($"a nonce of 1 to {TpmConstants.MaxDigestSize} bytes is required", nameof(nonce));
        }
        var extraData = nonce.ToArray();
        var quote = new TpmsAttest(TpmConstants.Generated, TpmSt.AttestQuote, AkName, extraData, NextClock(), FirmwareVersion,
            new TpmsQuoteInfo(Boot.QuoteSelection, Boot.PcrDigest)).ToBytes();
        var certify = new TpmsAttest(TpmConstants.Generated, TpmSt.AttestCertify, AkName, extraData, NextClock(), FirmwareVersion,
            new TpmsCertifyInfo(BindingKeyName, BindingKeyQualifiedName)).ToBytes();
        return new SoftwareTpmOutput(quote, Sign(quote), certify, Sign(certify));
    }

    /// <summary>The evidence a host sends (POST /v1/attestations) for a nonce the Guardian issued (lowercase hex).</summary>
    public AttestationEvidence Evidence(string hostId, string nonceHex)
    {
        var o = QuoteAndCertify(Convert.FromHexString(nonceHex));
        return new AttestationEvidence(hostId, nonceHex, Convert.ToBase64String(o.Quote), Convert.ToBase64String(o.QuoteSignature),
            Boot.WirePcrs, Boot.EventLogBase64, _bindingKeyPublicBase64, Convert.ToBase64String(o.Certify), Convert.ToBase64String(o.CertifySignature));
    }

    /// <summary>TPMS_CLOCK_INFO: milliseconds since this TPM was made, strictly increasing; reset/restart counts stable; safe.</summary>
    private TpmsClockInfo NextClock()
    {
        ulong now = _clockAtStart + (ulong)Time.GetElapsedTime(_startedAt).TotalMilliseconds;
        _lastClock = Math.Max(now, _lastClock + 1);
        return new TpmsClockInfo(_lastClock, ResetCount, RestartCount, Safe: true);
    }

    private byte[] Sign(byte[] message)
    {
        Span<byte> rs = stackalloc byte[64];
        if (!_ak.TrySignData(message, rs, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation, out int n) || n != 64)
        {
            throw new CryptographicException("ECDSA P-256 signing failed");
        }
        return TpmtSignature.EccSignature(TpmAlgId.EcDsa, TpmAlgId.Sha256, rs[..32].ToArray(), rs[32..].ToArray()).ToBytes();
    }

    /// <summary>
    /// RSAES-OAEP decryption (RFC 8017 §7.1.2) with the EK's nameAlg and a label with its
    /// terminating zero (Part 1, §11.4.9): .NET's RSA takes no OAEP label, so the private-key
    /// operation is done with BigInteger (CRT) and EME-OAEP is decoded here; MGF1 is the library's.
    /// Every malformation gives the same error.
    /// </summary>
    private byte[] OaepDecrypt(ReadOnlySpan<byte> ciphertext, string label)
    {
        var key = _ek.ExportParameters(true);
        var hash = EkPublic.NameAlg;
        int k = key.Modulus!.Length, hLen = TpmHash.DigestSize(hash);
        var n = Unsigned(key.Modulus);
        var c = Unsigned(ciphertext);
        if (ciphertext.Length != k || c >= n)
        {
            throw new CryptographicException("TPM_RC_VALUE: the encrypted seed does not decrypt with this EK");
        }
        var p = Unsigned(key.P!);
        var q = Unsigned(key.Q!);
        var m1 = BigInteger.ModPow(c, Unsigned(key.DP!), p);
        var m2 = BigInteger.ModPow(c, Unsigned(key.DQ!), q);
        var h = (Unsigned(key.InverseQ!) * (m1 - m2 + p)) % p;
        var m = m2 + (h * q);
        var em = KeyConversion.Pad(m.ToByteArray(isUnsigned: true, isBigEndian: true), k);
        try
        {
            var maskedSeed = em.AsSpan(1, hLen);
            var maskedDb = em.AsSpan(1 + hLen);
            var seedMask = SecretSharing.Mgf1(hash, maskedDb, hLen);
            for (int i = 0; i < hLen; i++)
            {
                maskedSeed[i] ^= seedMask[i];
            }
            var dbMask = SecretSharing.Mgf1(hash, maskedSeed, maskedDb.Length);
            for (int i = 0; i < maskedDb.Length; i++)
            {
                maskedDb[i] ^= dbMask[i];
            }
            var lHash = TpmHash.Hash(hash, [.. System.Text.Encoding.ASCII.GetBytes(label), 0]);
            int one = maskedDb[hLen..].IndexOfAnyExcept((byte)0);
            bool ok = em[0] == 0 && CryptographicOperations.FixedTimeEquals(maskedDb[..hLen], lHash) && one >= 0 && maskedDb[hLen + one] == 1;
            if (!ok)
            {
                throw new CryptographicException("TPM_RC_VALUE: the encrypted seed does not decrypt with this EK");
            }
            return maskedDb[(hLen + one + 1)..].ToArray();
        }
        finally
        {
            CryptographicOperations.ZeroMemory(em);
            CryptographicOperations.ZeroMemory(key.D);
            CryptographicOperations.ZeroMemory(key.P);
            CryptographicOperations.ZeroMemory(key.Q);
            CryptographicOperations.ZeroMemory(key.DP);
            CryptographicOperations.ZeroMemory(key.DQ);
            CryptographicOperations.ZeroMemory(key.InverseQ);
        }
    }

    private static BigInteger Unsigned(ReadOnlySpan<byte> bigEndian) => new(bigEndian, isUnsigned: true, isBigEndian: true);

    private static byte[] QualifiedName(byte[] parentQualifiedName, byte[] name) =>
        [0x00, 0x0B, .. TpmHash.Hash(TpmAlgId.Sha256, [.. parentQualifiedName, .. name])];

    public void Dispose()
    {
        _ek.Dispose();
        _ak.Dispose();
    }
}

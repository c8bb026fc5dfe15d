using System.Security.Cryptography;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm.Crypto;

/// <summary>One failed check, with a stable identifier (e.g. <c>quote.nonce</c>), what was found and what was expected.</summary>
public sealed record VerificationFailure(string Id, string Message);

/// <summary>The outcome of verifying a signed attestation: valid, or the list of failed checks.</summary>
public sealed record VerificationResult(IReadOnlyList<VerificationFailure> Failures, TpmsAttest? Attest)
{
    public bool Valid => Failures.Count == 0;

    public override string ToString() => Valid ? "valid" : string.Join("; ", Failures.Select(f => $"{f.Id}: {f.Message}"));
}

/// <summary>
/// Verifies TPM2_Quote and TPM2_Certify output (Part 3, §18.2, §18.4) with a public key the
/// caller already trusts. Every check runs and reports; nothing here decides that a key is
/// trustworthy — that is enrolment's job.
/// </summary>
public static class AttestationVerifier
{
    /// <summary>
    /// Checks: the signature over the exact message bytes (<c>quote.signature</c>); the
    /// TPM_GENERATED magic (<c>quote.magic</c>) and attest type (<c>quote.type</c>); the
    /// nonce as extraData (<c>quote.nonce</c>, constant-time); and, when
    /// <paramref name="pcrValues"/> is given, the PCR digest recomputed from them with the
    /// signing hash (<c>quote.pcr-digest</c>).
    /// </summary>
    public static VerificationResult VerifyQuote(TpmtPublic ak, ReadOnlySpan<byte> message, TpmtSignature signature, ReadOnlySpan<byte> nonce,
        Func<TpmAlgId, int, byte[]?>? pcrValues = null)
    {
        VerificationKey key;
        try
        {
            key = new VerificationKey(ak);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException or NotSupportedException or InvalidCastException)
        {
            return new VerificationResult([new("quote.key", "the AK public area is unusable: " + e.Message)], null);
        }
        using (key)
        {
            return VerifyQuote(key, message, signature, nonce, pcrValues);
        }
    }

    /// <summary>As the overload taking a TPMT_PUBLIC, with the AK imported once by the caller.</summary>
    public static VerificationResult VerifyQuote(VerificationKey ak, ReadOnlySpan<byte> message, TpmtSignature signature, ReadOnlySpan<byte> nonce,
        Func<TpmAlgId, int, byte[]?>? pcrValues = null)
    {
        var failures = new List<VerificationFailure>();
        var attest = CheckCommon(ak, message, signature, nonce, TpmSt.AttestQuote, "quote", failures);
        if (attest?.Attested is TpmsQuoteInfo q && pcrValues is not null)
        {
            var hashAlg = signature.Hash != TpmAlgId.Null ? signature.Hash : ak.Public.NameAlg;
            try
            {
                var expected = PcrComposite.Digest(hashAlg, q.PcrSelect, pcrValues);
                if (!CryptographicOperations.FixedTimeEquals(expected, q.PcrDigest))
                {
                    failures.Add(new("quote.pcr-digest", $"PCR digest {Convert.ToHexStringLower(q.PcrDigest)} does not match the PCR values given ({Convert.ToHexStringLower(expected)}) for {q.PcrSelect}"));
                }
            }
            catch (KeyNotFoundException e)
            {
                failures.Add(new("quote.pcr-digest", e.Message));
            }
        }
        return new VerificationResult(failures, attest);
    }

    /// <summary>
    /// Checks a TPM2_Certify: signature, magic, type, nonce, and that the certified Name is
    /// the Name of <paramref name="certified"/> (<c>certify.name</c>).
    /// </summary>
    public static VerificationResult VerifyCertify(TpmtPublic ak, ReadOnlySpan<byte> message, TpmtSignature signature, ReadOnlySpan<byte> nonce, TpmtPublic certified)
    {
        VerificationKey key;
        try
        {
            key = new VerificationKey(ak);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException or NotSupportedException or InvalidCastException)
        {
            return new VerificationResult([new("certify.key", "the AK public area is unusable: " + e.Message)], null);
        }
        using (key)
        {
            return VerifyCertify(key, message, signature, nonce, certified);
        }
    }

    /// <summary>As the overload taking a TPMT_PUBLIC, with the AK imported once by the caller.</summary>
    public static VerificationResult VerifyCertify(VerificationKey ak, ReadOnlySpan<byte> message, TpmtSignature signature, ReadOnlySpan<byte> nonce, TpmtPublic certified)
    {
        var failures = new List<VerificationFailure>();
        var attest = CheckCommon(ak, message, signature, nonce, TpmSt.AttestCertify, "certify", failures);
        if (attest?.Attested is TpmsCertifyInfo c)
        {
            var name = certified.Name();
            if (!CryptographicOperations.FixedTimeEquals(name, c.Name))
            {
                failures.Add(new("certify.name", $"certified Name {Convert.ToHexStringLower(c.Name)} is not the key's Name {Convert.ToHexStringLower(name)}"));
            }
        }
        return new VerificationResult(failures, attest);
    }

    private static TpmsAttest? CheckCommon(VerificationKey ak, ReadOnlySpan<byte> message, TpmtSignature signature, ReadOnlySpan<byte> nonce,
        TpmSt type, string prefix, List<VerificationFailure> failures)
    {
        if (!ak.Public.Has(TpmaObject.Sign))
        {
            failures.Add(new($"{prefix}.key", "the key is not a signing key"));
        }
        if (!SignatureVerifier.Verify(ak, message, signature, out var reason))
        {
            failures.Add(new($"{prefix}.signature", reason));
        }
        TpmsAttest attest;
        try
        {
            attest = TpmsAttest.Parse(message);
        }
        catch (Marshal.TpmFormatException e)
        {
            failures.Add(new($"{prefix}.format", e.Message));
            return null;
        }
        if (attest.Magic != TpmConstants.Generated)
        {
            failures.Add(new($"{prefix}.magic", $"magic 0x{attest.Magic:x8} is not TPM_GENERATED_VALUE 0xff544347"));
        }
        if (attest.Type != type)
        {
            failures.Add(new($"{prefix}.type", $"attestation type {attest.Type} is not {type}"));
        }
        if (nonce.Length == 0)
        {
            failures.Add(new($"{prefix}.nonce", "no nonce was given to check against: a nonce is mandatory"));
        }
        else if (!CryptographicOperations.FixedTimeEquals(attest.ExtraData, nonce))
        {
            failures.Add(new($"{prefix}.nonce", $"extraData {Convert.ToHexStringLower(attest.ExtraData)} is not the expected nonce"));
        }
        return attest;
    }
}

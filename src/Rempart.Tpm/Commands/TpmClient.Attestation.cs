using Rempart.Tpm.Marshal;
using Rempart.Tpm.Sessions;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm;

/// <summary>Part 3, §18 (Attestation Commands), §20 (Signing and Signature Verification), §14 (Asymmetric Primitives).</summary>
public sealed partial class TpmClient
{
    /// <summary>
    /// TPM2_Quote (Part 3, §18.4): the TPM signs a TPMS_ATTEST holding the digest of the
    /// selected PCRs and <paramref name="qualifyingData"/> (the verifier's nonce). Returns
    /// the exact bytes signed, so a verifier hashes what the TPM hashed.
    /// </summary>
    public SignedAttestation Quote(TpmHandle signKey, byte[] qualifyingData, TpmlPcrSelection pcrs, TpmtScheme? scheme = null, TpmSession? auth = null)
    {
        var w = new TpmWriter();
        w.WriteSized(qualifyingData);
        (scheme ?? TpmtScheme.Null).Write(w);
        pcrs.Write(w);
        var r = Execute(TpmCc.Quote, [signKey], 1, [auth], w.ToArray(), 0, out _, commandParamEncryptable: true, responseParamEncryptable: true);
        return ReadSignedAttestation(ref r, "Quote");
    }

    /// <summary>
    /// TPM2_Certify (Part 3, §18.2): <paramref name="signKey"/> attests that
    /// <paramref name="obj"/> is loaded in the same TPM (its Name in a TPMS_CERTIFY_INFO).
    /// <paramref name="obj"/> is authorised in the ADMIN role.
    /// </summary>
    public SignedAttestation Certify(TpmHandle obj, TpmHandle signKey, byte[] qualifyingData, TpmtScheme? scheme = null,
        TpmSession? objectAuth = null, TpmSession? signAuth = null)
    {
        var w = new TpmWriter();
        w.WriteSized(qualifyingData);
        (scheme ?? TpmtScheme.Null).Write(w);
        var r = Execute(TpmCc.Certify, [obj, signKey], 2, [objectAuth, signAuth], w.ToArray(), 0, out _,
            commandParamEncryptable: true, responseParamEncryptable: true);
        return ReadSignedAttestation(ref r, "Certify");
    }

    private static SignedAttestation ReadSignedAttestation(ref TpmReader r, string command)
    {
        var attestBytes = r.ReadSized("TPM2B_ATTEST", 2048);
        var sig = TpmtSignature.Read(ref r);
        r.ExpectEnd($"{command} response");
        return new SignedAttestation(attestBytes, TpmsAttest.Parse(attestBytes), sig);
    }

    /// <summary>TPM2_Sign (Part 3, §20.2) over a digest, with a NULL hash-check ticket (unrestricted keys).</summary>
    public TpmtSignature Sign(TpmHandle key, byte[] digest, TpmtScheme? scheme = null, TpmSession? auth = null)
    {
        var w = new TpmWriter();
        w.WriteSized(digest);
        (scheme ?? TpmtScheme.Null).Write(w);
        TpmtTicket.NullHashCheck.Write(w);
        var r = Execute(TpmCc.Sign, [key], 1, [auth], w.ToArray(), 0, out _, commandParamEncryptable: true);
        var sig = TpmtSignature.Read(ref r);
        r.ExpectEnd("Sign response");
        return sig;
    }

    /// <summary>TPM2_RSA_Decrypt (Part 3, §14.3). With OAEP, <paramref name="label"/> must carry its terminating zero.</summary>
    public byte[] RsaDecrypt(TpmHandle key, byte[] cipherText, TpmtScheme scheme, byte[] label, TpmSession? auth = null)
    {
        var w = new TpmWriter();
        w.WriteSized(cipherText);
        scheme.Write(w);
        w.WriteSized(label);
        var r = Execute(TpmCc.RsaDecrypt, [key], 1, [auth], w.ToArray(), 0, out _, commandParamEncryptable: true, responseParamEncryptable: true);
        var msg = r.ReadSized("TPM2B_PUBLIC_KEY_RSA message", TpmtPublic.MaxRsaKeyBytes);
        r.ExpectEnd("RSA_Decrypt response");
        return msg;
    }

    /// <summary>TPM2_ECDH_ZGen (Part 3, §14.5): the shared point d·Q for the loaded key d.</summary>
    public TpmsEccPoint EcdhZGen(TpmHandle key, TpmsEccPoint inPoint, TpmSession? auth = null)
    {
        var w = new TpmWriter();
        w.WriteSized(inner => inner.WriteSized(inPoint.X).WriteSized(inPoint.Y));
        var r = Execute(TpmCc.EcdhZGen, [key], 1, [auth], w.ToArray(), 0, out _, commandParamEncryptable: true, responseParamEncryptable: true);
        var inner = r.ReadSizedReader("TPM2B_ECC_POINT outPoint");
        var point = TpmsEccPoint.Read(ref inner);
        inner.ExpectEnd("TPM2B_ECC_POINT");
        r.ExpectEnd("ECDH_ZGen response");
        return point;
    }
}

/// <summary>
/// A TPMS_ATTEST as the TPM produced it (<see cref="Message"/>, the signed bytes), parsed
/// (<see cref="Attest"/>, still untrusted) and its signature.
/// </summary>
public sealed record SignedAttestation(byte[] Message, TpmsAttest Attest, TpmtSignature Signature);

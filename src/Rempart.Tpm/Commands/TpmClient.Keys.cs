using System.Security.Cryptography.X509Certificates;
using Rempart.Tpm.Sessions;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Templates;

namespace Rempart.Tpm;

/// <summary>The keys every Rempart component needs, from the standard templates.</summary>
public sealed partial class TpmClient
{
    /// <summary>The EK, re-created from template L-1 (rsa) or L-2 (ecc) in the endorsement hierarchy.</summary>
    public CreatedObject CreateEk(string kind = "rsa") => CreatePrimary(TpmHandle.Endorsement, KeyTemplates.Ek(kind));

    /// <summary>The SRK in the owner hierarchy (RSA-2048 or ECC P-256).</summary>
    public CreatedObject CreateSrk(string kind = "rsa") =>
        CreatePrimary(TpmHandle.Owner, kind == "ecc" ? KeyTemplates.SrkEccP256 : KeyTemplates.SrkRsa2048);

    /// <summary>
    /// An attestation key: a restricted signing primary key in the endorsement hierarchy.
    /// Primary keys are derived from the hierarchy seed, so the same TPM yields the same AK
    /// until the endorsement seed changes; no state is kept on disk.
    /// </summary>
    public CreatedObject CreateAk(string kind = "rsa") => CreatePrimary(TpmHandle.Endorsement, KeyTemplates.Ak(kind));

    /// <summary>A policy session satisfying the TCG default EK policy: PolicySecret(TPM_RH_ENDORSEMENT).</summary>
    public AuthSession StartEkPolicySession(TpmSession? endorsementAuth = null)
    {
        var s = StartAuthSession(TpmSe.Policy, TpmAlgId.Sha256);
        try
        {
            PolicySecret(TpmHandle.Endorsement, s, endorsementAuth);
            return s;
        }
        catch
        {
            FlushSession(s);
            throw;
        }
    }

    /// <summary>
    /// The EK certificate from its NV index (TCG EK Credential Profile §2.2.1.4:
    /// 0x01C00002 for RSA-2048, 0x01C0000A for ECC P-256), or null when the TPM has none.
    /// Read with the index's own (empty) authorisation, falling back to the owner.
    /// </summary>
    public X509Certificate2? ReadEkCertificate(string kind = "rsa")
    {
        uint index = kind == "ecc" ? TpmConstants.NvEccEkCert : TpmConstants.NvRsaEkCert;
        byte[] der;
        try
        {
            der = NvRead(index);
        }
        catch (TpmException e) when (e.Is(TpmRc.Handle))
        {
            return null;
        }
        catch (TpmException e) when (e.Is(TpmRc.NvAuthorization) || e.Is(TpmRc.AuthUnavailable) || e.Is(TpmRc.Attributes))
        {
            der = NvRead(index, TpmHandle.Owner);
        }
        // Some TPMs pad the index with zeros after the DER: take the outer SEQUENCE's length.
        int len = DerLength(der);
        return X509CertificateLoader.LoadCertificate(der.AsSpan(0, len));
    }

    private static int DerLength(byte[] der)
    {
        if (der.Length < 2 || der[0] != 0x30)
        {
            throw new FormatException("EK certificate NV index does not hold a DER SEQUENCE");
        }
        int b = der[1];
        if (b < 0x80)
        {
            return Math.Min(der.Length, 2 + b);
        }
        int n = b & 0x7F;
        if (n is 0 or > 3 || der.Length < 2 + n)
        {
            throw new FormatException("EK certificate NV index holds a DER length that is not understood");
        }
        int len = 0;
        for (int i = 0; i < n; i++)
        {
            len = (len << 8) | der[2 + i];
        }
        int total = 2 + n + len;
        if (total > der.Length)
        {
            throw new FormatException($"EK certificate NV index holds {der.Length} bytes, the DER says {total}");
        }
        return total;
    }
}

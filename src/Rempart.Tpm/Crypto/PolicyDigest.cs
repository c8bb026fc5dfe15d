using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm.Crypto;

/// <summary>
/// Computes a policy digest in software, as a trial session would (Part 3, §23: each
/// command's "policyDigest_new" formula), so a verifier can predict a key's authPolicy.
/// </summary>
public sealed class PolicyDigest
{
    public PolicyDigest(TpmAlgId hashAlg)
    {
        HashAlg = hashAlg;
        Digest = new byte[TpmHash.DigestSize(hashAlg)];
    }

    public TpmAlgId HashAlg { get; }

    public byte[] Digest { get; private set; }

    private PolicyDigest Update(Action<TpmWriter> body)
    {
        var w = new TpmWriter();
        w.WriteBytes(Digest);
        body(w);
        Digest = TpmHash.Hash(HashAlg, w.Written);
        return this;
    }

    /// <summary>Part 3, §23.7: H(old || TPM_CC_PolicyPCR || pcrs || digestTPM).</summary>
    public PolicyDigest PolicyPcr(TpmlPcrSelection pcrs, byte[] pcrDigest) => Update(w =>
    {
        w.WriteUInt32((uint)TpmCc.PolicyPcr);
        pcrs.Write(w);
        w.WriteBytes(pcrDigest);
    });

    /// <summary>Part 3, §23.4 with PolicyUpdate (§23.2.3): H(H(old || TPM_CC_PolicySecret || authName) || policyRef).</summary>
    public PolicyDigest PolicySecret(byte[] authObjectName, byte[]? policyRef = null)
    {
        Update(w => w.WriteUInt32((uint)TpmCc.PolicySecret).WriteBytes(authObjectName));
        return Update(w => w.WriteBytes(policyRef ?? []));
    }

    /// <summary>Part 3, §23.17: H(old || TPM_CC_PolicyAuthValue).</summary>
    public PolicyDigest PolicyAuthValue() => Update(w => w.WriteUInt32((uint)TpmCc.PolicyAuthValue));

    /// <summary>Part 3, §23.18: PolicyPassword extends the same code as PolicyAuthValue.</summary>
    public PolicyDigest PolicyPassword() => PolicyAuthValue();

    /// <summary>Part 3, §23.11: H(old || TPM_CC_PolicyCommandCode || code).</summary>
    public PolicyDigest PolicyCommandCode(TpmCc code) => Update(w => w.WriteUInt32((uint)TpmCc.PolicyCommandCode).WriteUInt32((uint)code));

    /// <summary>Part 3, §23.6: H(0…0 || TPM_CC_PolicyOR || digests).</summary>
    public PolicyDigest PolicyOr(IReadOnlyList<byte[]> branches)
    {
        Digest = new byte[Digest.Length];
        return Update(w =>
        {
            w.WriteUInt32((uint)TpmCc.PolicyOr);
            foreach (var b in branches)
            {
                w.WriteBytes(b);
            }
        });
    }
}

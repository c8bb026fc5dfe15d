using Rempart.Tpm.Structures;

namespace Rempart.Tpm.Crypto;

/// <summary>PCR arithmetic a verifier needs without a TPM.</summary>
public static class PcrComposite
{
    /// <summary>
    /// The digest a quote or PolicyPCR covers (Part 3, §18.4.1, §23.7.1): the hash of the
    /// selected PCR values concatenated in selection order (each selection in order, PCR
    /// indexes ascending). Throws when a selected value is missing.
    /// </summary>
    public static byte[] Digest(TpmAlgId hashAlg, TpmlPcrSelection selection, Func<TpmAlgId, int, byte[]?> value)
    {
        var all = new List<byte>();
        foreach (var (bank, pcr) in selection.Enumerate())
        {
            var v = value(bank, pcr) ?? throw new KeyNotFoundException($"no value for PCR {TpmHash.ToName(bank)}:{pcr}");
            all.AddRange(v);
        }
        return TpmHash.Hash(hashAlg, all.ToArray());
    }

    /// <summary>PCR extend: new = H(old || digest) (Part 1, §17.2).</summary>
    public static byte[] Extend(TpmAlgId bank, ReadOnlySpan<byte> old, ReadOnlySpan<byte> digest) => TpmHash.Hash(bank, [.. old, .. digest]);
}

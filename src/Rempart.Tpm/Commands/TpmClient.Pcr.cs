using Rempart.Tpm.Marshal;
using Rempart.Tpm.Sessions;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm;

/// <summary>Part 3, §22 (Integrity Collection: PCR).</summary>
public sealed partial class TpmClient
{
    /// <summary>
    /// TPM2_PCR_Read (Part 3, §22.4). The TPM returns at most 8 digests per call, so this
    /// asks again for what it left out. The result maps bank → PCR index → value, and the
    /// update counter seen on the last call.
    /// </summary>
    public PcrValues PcrRead(TpmlPcrSelection selection)
    {
        var values = new Dictionary<TpmAlgId, SortedDictionary<int, byte[]>>();
        var pending = selection.Selections.Select(s => (s.Hash, Pcrs: s.Pcrs.Order().ToList())).Where(s => s.Pcrs.Count > 0).ToList();
        uint counter = 0;
        uint? firstCounter = null;
        while (pending.Count > 0)
        {
            var ask = new TpmlPcrSelection(pending.Select(p => new TpmsPcrSelection(p.Hash, p.Pcrs)).ToList());
            var w = new TpmWriter();
            ask.Write(w);
            var r = Execute(TpmCc.PcrRead, [], 0, null, w.ToArray(), 0, out _);
            counter = r.ReadUInt32("pcrUpdateCounter");
            firstCounter ??= counter;
            var got = TpmlPcrSelection.Read(ref r);
            var digests = TpmlDigest.Read(ref r);
            r.ExpectEnd("PCR_Read response");
            var pairs = got.Enumerate().ToList();
            if (pairs.Count != digests.Digests.Count)
            {
                throw new TpmFormatException(r.Offset, $"{pairs.Count} PCR values for the selection returned (got {digests.Digests.Count})");
            }
            if (pairs.Count == 0)
            {
                // The TPM does not implement what remains (an unallocated bank): stop.
                break;
            }
            for (int i = 0; i < pairs.Count; i++)
            {
                var (bank, pcr) = pairs[i];
                if (!values.TryGetValue(bank, out var map))
                {
                    values[bank] = map = [];
                }
                map[pcr] = digests.Digests[i];
            }
            pending = pending
                .Select(p => (p.Hash, Pcrs: p.Pcrs.Where(x => !(values.TryGetValue(p.Hash, out var m) && m.ContainsKey(x))).ToList()))
                .Where(p => p.Pcrs.Count > 0)
                .ToList();
        }
        return new PcrValues(values.ToDictionary(kv => kv.Key, kv => (IReadOnlyDictionary<int, byte[]>)kv.Value), counter, firstCounter == counter);
    }

    /// <summary>TPM2_PCR_Extend (Part 3, §22.2): extends one digest per bank into a PCR.</summary>
    public void PcrExtend(int pcr, TpmlDigestValues digests, TpmSession? auth = null)
    {
        var w = new TpmWriter();
        digests.Write(w);
        Execute(TpmCc.PcrExtend, [TpmHandle.Pcr(pcr)], 1, [auth], w.ToArray(), 0, out _);
    }
}

/// <summary>
/// PCR values read from a TPM: bank → index → digest. <see cref="Consistent"/> is false when
/// the PCRs changed between the reads a large selection needed.
/// </summary>
public sealed record PcrValues(IReadOnlyDictionary<TpmAlgId, IReadOnlyDictionary<int, byte[]>> Banks, uint UpdateCounter, bool Consistent)
{
    public byte[] this[TpmAlgId bank, int pcr] => Banks[bank][pcr];
}

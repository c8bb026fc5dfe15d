using Rempart.Tpm.Marshal;

namespace Rempart.Tpm.Structures;

/// <summary>TPMT_HA (Part 2, §10.3.2): a hash algorithm and a digest of its size.</summary>
public sealed record TpmtHa(TpmAlgId HashAlg, byte[] Digest)
{
    public void Write(TpmWriter w) => w.WriteUInt16((ushort)HashAlg).WriteBytes(Digest);

    public static TpmtHa Read(ref TpmReader r)
    {
        int at = r.Offset;
        var alg = (TpmAlgId)r.ReadUInt16("TPMT_HA.hashAlg");
        if (alg == TpmAlgId.Null)
        {
            return new TpmtHa(alg, []);
        }
        int size = TpmHash.DigestSize(alg);
        if (size == 0)
        {
            throw new TpmFormatException(at, $"a hash algorithm in TPMT_HA.hashAlg (got 0x{(ushort)alg:x4})");
        }
        return new TpmtHa(alg, r.ReadBytes(size, "TPMT_HA.digest"));
    }
}

/// <summary>TPMS_PCR_SELECTION (Part 2, §10.6.2): a bank and a bitmap of PCR indexes.</summary>
public sealed record TpmsPcrSelection(TpmAlgId Hash, IReadOnlyList<int> Pcrs)
{
    private readonly int _sizeOfSelect;

    /// <summary>
    /// Bitmap size: 3 bytes cover PCRs 0–23, which PC Client TPMs have, or more for a higher
    /// PCR. A parsed selection keeps the size it was read with, so it writes back the same bytes.
    /// </summary>
    public int SizeOfSelect
    {
        get => Math.Max(_sizeOfSelect, Math.Max(3, Pcrs.Count == 0 ? 3 : (Pcrs.Max() / 8) + 1));
        init => _sizeOfSelect = value;
    }

    public void Write(TpmWriter w)
    {
        w.WriteUInt16((ushort)Hash);
        var select = new byte[SizeOfSelect];
        foreach (int pcr in Pcrs)
        {
            select[pcr / 8] |= (byte)(1 << (pcr % 8));
        }
        w.WriteByte((byte)select.Length).WriteBytes(select);
    }

    public static TpmsPcrSelection Read(ref TpmReader r)
    {
        var hash = (TpmAlgId)r.ReadUInt16("TPMS_PCR_SELECTION.hash");
        int at = r.Offset;
        byte size = r.ReadByte("TPMS_PCR_SELECTION.sizeofSelect");
        if (size < TpmConstants.PcrSelectMin || size > TpmConstants.PcrSelectMax)
        {
            throw new TpmFormatException(at, $"sizeofSelect {TpmConstants.PcrSelectMin} to {TpmConstants.PcrSelectMax} (got {size})");
        }
        var bits = r.ReadSpan(size, "TPMS_PCR_SELECTION.pcrSelect");
        var pcrs = new List<int>();
        for (int i = 0; i < size * 8; i++)
        {
            if ((bits[i / 8] & (1 << (i % 8))) != 0)
            {
                pcrs.Add(i);
            }
        }
        return new TpmsPcrSelection(hash, pcrs) { SizeOfSelect = size };
    }
}

/// <summary>TPML_PCR_SELECTION (Part 2, §10.9.7).</summary>
public sealed record TpmlPcrSelection(IReadOnlyList<TpmsPcrSelection> Selections)
{
    /// <summary>HASH_COUNT: at most one selection per implemented bank; 16 is generous.</summary>
    public const int MaxCount = 16;

    public static TpmlPcrSelection Empty { get; } = new([]);

    public static TpmlPcrSelection Of(TpmAlgId bank, params int[] pcrs) => new([new TpmsPcrSelection(bank, pcrs)]);

    public void Write(TpmWriter w)
    {
        w.WriteUInt32((uint)Selections.Count);
        foreach (var s in Selections)
        {
            s.Write(w);
        }
    }

    public static TpmlPcrSelection Read(ref TpmReader r)
    {
        int count = r.ReadCount("TPML_PCR_SELECTION", MaxCount);
        var list = new List<TpmsPcrSelection>(count);
        for (int i = 0; i < count; i++)
        {
            list.Add(TpmsPcrSelection.Read(ref r));
        }
        return new TpmlPcrSelection(list);
    }

    /// <summary>The (bank, pcr) pairs in the order the TPM hashes them: selections in order, PCRs ascending.</summary>
    public IEnumerable<(TpmAlgId Bank, int Pcr)> Enumerate()
    {
        foreach (var s in Selections)
        {
            foreach (int p in s.Pcrs.Order())
            {
                yield return (s.Hash, p);
            }
        }
    }

    public int TotalPcrs => Selections.Sum(s => s.Pcrs.Count);

    public override string ToString() =>
        string.Join("+", Selections.Select(s => $"{TpmHash.ToName(s.Hash)}:{string.Join(",", s.Pcrs)}"));
}

/// <summary>TPML_DIGEST (Part 2, §10.9.2): at most 8 digests.</summary>
public sealed record TpmlDigest(IReadOnlyList<byte[]> Digests)
{
    public const int MaxCount = 8;

    public void Write(TpmWriter w)
    {
        w.WriteUInt32((uint)Digests.Count);
        foreach (var d in Digests)
        {
            w.WriteSized(d);
        }
    }

    public static TpmlDigest Read(ref TpmReader r)
    {
        int count = r.ReadCount("TPML_DIGEST", MaxCount);
        var list = new List<byte[]>(count);
        for (int i = 0; i < count; i++)
        {
            list.Add(r.ReadSized("TPM2B_DIGEST", TpmConstants.MaxDigestSize));
        }
        return new TpmlDigest(list);
    }
}

/// <summary>TPML_DIGEST_VALUES (Part 2, §10.9.6): one TPMT_HA per bank, as PCR_Extend takes.</summary>
public sealed record TpmlDigestValues(IReadOnlyList<TpmtHa> Digests)
{
    public const int MaxCount = 16;

    public void Write(TpmWriter w)
    {
        w.WriteUInt32((uint)Digests.Count);
        foreach (var d in Digests)
        {
            d.Write(w);
        }
    }

    public static TpmlDigestValues Read(ref TpmReader r)
    {
        int count = r.ReadCount("TPML_DIGEST_VALUES", MaxCount);
        var list = new List<TpmtHa>(count);
        for (int i = 0; i < count; i++)
        {
            list.Add(TpmtHa.Read(ref r));
        }
        return new TpmlDigestValues(list);
    }
}

using Rempart.Tpm.Marshal;

namespace Rempart.Tpm.Structures;

/// <summary>TPMU_PUBLIC_PARMS (Part 2, §12.2.3.7): the algorithm-specific parameters of a public area.</summary>
public abstract record TpmuPublicParms
{
    internal abstract void Write(TpmWriter w);
}

/// <summary>TPMS_RSA_PARMS (Part 2, §12.2.3.5). An exponent of 0 means 65537.</summary>
public sealed record TpmsRsaParms(TpmtSymDef Symmetric, TpmtScheme Scheme, ushort KeyBits, uint Exponent) : TpmuPublicParms
{
    public uint EffectiveExponent => Exponent == 0 ? 65537u : Exponent;

    internal override void Write(TpmWriter w)
    {
        Symmetric.Write(w);
        Scheme.Write(w);
        w.WriteUInt16(KeyBits).WriteUInt32(Exponent);
    }
}

/// <summary>TPMS_ECC_PARMS (Part 2, §12.2.3.6).</summary>
public sealed record TpmsEccParms(TpmtSymDef Symmetric, TpmtScheme Scheme, TpmEccCurve CurveId, TpmtScheme Kdf) : TpmuPublicParms
{
    internal override void Write(TpmWriter w)
    {
        Symmetric.Write(w);
        Scheme.Write(w);
        w.WriteUInt16((ushort)CurveId);
        Kdf.Write(w);
    }
}

/// <summary>TPMS_KEYEDHASH_PARMS (Part 2, §12.2.3.3).</summary>
public sealed record TpmsKeyedHashParms(TpmtScheme Scheme) : TpmuPublicParms
{
    internal override void Write(TpmWriter w) => Scheme.Write(w);
}

/// <summary>TPMS_SYMCIPHER_PARMS (Part 2, §12.2.3.2).</summary>
public sealed record TpmsSymCipherParms(TpmtSymDef Sym) : TpmuPublicParms
{
    internal override void Write(TpmWriter w) => Sym.Write(w);
}

/// <summary>TPMU_PUBLIC_ID (Part 2, §12.2.3.2): the unique field of a public area.</summary>
public abstract record TpmuPublicId
{
    internal abstract void Write(TpmWriter w);
}

/// <summary>TPM2B_PUBLIC_KEY_RSA: the modulus; or TPM2B_DIGEST for KEYEDHASH and SYMCIPHER objects.</summary>
public sealed record TpmBufferId(byte[] Buffer) : TpmuPublicId
{
    internal override void Write(TpmWriter w) => w.WriteSized(Buffer);
}

/// <summary>TPMS_ECC_POINT (Part 2, §11.2.5.2).</summary>
public sealed record TpmsEccPoint(byte[] X, byte[] Y) : TpmuPublicId
{
    public const int MaxCoordinate = 66;

    internal override void Write(TpmWriter w) => w.WriteSized(X).WriteSized(Y);

    public static TpmsEccPoint Read(ref TpmReader r) =>
        new(r.ReadSized("TPMS_ECC_POINT.x", MaxCoordinate), r.ReadSized("TPMS_ECC_POINT.y", MaxCoordinate));
}

/// <summary>
/// TPMT_PUBLIC (Part 2, §12.2.4): the public area of a TPM object. RSA, ECC, KEYEDHASH and
/// SYMCIPHER types are supported; anything else is a format error.
/// </summary>
public sealed record TpmtPublic(
    TpmAlgId Type,
    TpmAlgId NameAlg,
    TpmaObject ObjectAttributes,
    byte[] AuthPolicy,
    TpmuPublicParms Parameters,
    TpmuPublicId Unique)
{
    /// <summary>Largest RSA modulus we accept (RSA-4096).</summary>
    public const int MaxRsaKeyBytes = 512;

    public void Write(TpmWriter w)
    {
        w.WriteUInt16((ushort)Type).WriteUInt16((ushort)NameAlg).WriteUInt32((uint)ObjectAttributes).WriteSized(AuthPolicy);
        Parameters.Write(w);
        Unique.Write(w);
    }

    public byte[] ToBytes()
    {
        var w = new TpmWriter();
        Write(w);
        return w.ToArray();
    }

    /// <summary>This public area with a new unique field (templates carry an empty one).</summary>
    public TpmtPublic WithUnique(TpmuPublicId unique) => this with { Unique = unique };

    public static TpmtPublic Read(ref TpmReader r)
    {
        int at = r.Offset;
        var type = (TpmAlgId)r.ReadUInt16("TPMT_PUBLIC.type");
        var nameAlg = (TpmAlgId)r.ReadUInt16("TPMT_PUBLIC.nameAlg");
        if (nameAlg != TpmAlgId.Null && !TpmHash.IsHash(nameAlg))
        {
            throw new TpmFormatException(at + 2, $"a hash algorithm or NULL in TPMT_PUBLIC.nameAlg (got 0x{(ushort)nameAlg:x4})");
        }
        var attrs = (TpmaObject)r.ReadUInt32("TPMT_PUBLIC.objectAttributes");
        var policy = r.ReadSized("TPMT_PUBLIC.authPolicy", TpmConstants.MaxDigestSize);
        TpmuPublicParms parms;
        TpmuPublicId unique;
        switch (type)
        {
            case TpmAlgId.Rsa:
                parms = new TpmsRsaParms(TpmtSymDef.Read(ref r), TpmtScheme.Read(ref r, "TPMS_RSA_PARMS.scheme"),
                    r.ReadUInt16("TPMS_RSA_PARMS.keyBits"), r.ReadUInt32("TPMS_RSA_PARMS.exponent"));
                unique = new TpmBufferId(r.ReadSized("TPM2B_PUBLIC_KEY_RSA", MaxRsaKeyBytes));
                break;
            case TpmAlgId.Ecc:
                parms = new TpmsEccParms(TpmtSymDef.Read(ref r), TpmtScheme.Read(ref r, "TPMS_ECC_PARMS.scheme"),
                    (TpmEccCurve)r.ReadUInt16("TPMS_ECC_PARMS.curveID"), TpmtScheme.Read(ref r, "TPMS_ECC_PARMS.kdf"));
                unique = TpmsEccPoint.Read(ref r);
                break;
            case TpmAlgId.KeyedHash:
                parms = new TpmsKeyedHashParms(TpmtScheme.Read(ref r, "TPMS_KEYEDHASH_PARMS.scheme"));
                unique = new TpmBufferId(r.ReadSized("TPM2B_DIGEST", TpmConstants.MaxDigestSize));
                break;
            case TpmAlgId.SymCipher:
                parms = new TpmsSymCipherParms(TpmtSymDef.Read(ref r));
                unique = new TpmBufferId(r.ReadSized("TPM2B_DIGEST", TpmConstants.MaxDigestSize));
                break;
            default:
                throw new TpmFormatException(at, $"TPMT_PUBLIC.type RSA, ECC, KEYEDHASH or SYMCIPHER (got 0x{(ushort)type:x4})");
        }
        return new TpmtPublic(type, nameAlg, attrs, policy, parms, unique);
    }

    /// <summary>Parses a bare TPMT_PUBLIC, rejecting trailing bytes.</summary>
    public static TpmtPublic Parse(ReadOnlySpan<byte> bytes)
    {
        var r = new TpmReader(bytes);
        var p = Read(ref r);
        r.ExpectEnd("TPMT_PUBLIC");
        return p;
    }

    /// <summary>Writes TPM2B_PUBLIC (Part 2, §12.2.5): UINT16 size then TPMT_PUBLIC.</summary>
    public void WriteSized(TpmWriter w) => w.WriteSized(Write);

    /// <summary>Reads TPM2B_PUBLIC, rejecting a size of zero or trailing bytes inside it.</summary>
    public static TpmtPublic ReadSized(ref TpmReader r)
    {
        var inner = r.ReadSizedReader("TPM2B_PUBLIC");
        if (inner.AtEnd)
        {
            throw inner.Error("a non-empty TPM2B_PUBLIC");
        }
        var p = Read(ref inner);
        inner.ExpectEnd("TPM2B_PUBLIC");
        return p;
    }

    /// <summary>Parses a TPM2B_PUBLIC file (tpm2-tools' default format for *.pub).</summary>
    public static TpmtPublic ParseSized(ReadOnlySpan<byte> bytes)
    {
        var r = new TpmReader(bytes);
        var p = ReadSized(ref r);
        r.ExpectEnd("TPM2B_PUBLIC file");
        return p;
    }

    public byte[] ToSizedBytes()
    {
        var w = new TpmWriter();
        WriteSized(w);
        return w.ToArray();
    }

    /// <summary>The object's Name (Part 1, §16): nameAlg || H_nameAlg(TPMT_PUBLIC).</summary>
    public byte[] Name()
    {
        var body = ToBytes();
        var digest = TpmHash.Hash(NameAlg, body);
        var name = new byte[2 + digest.Length];
        name[0] = (byte)((ushort)NameAlg >> 8);
        name[1] = (byte)NameAlg;
        digest.CopyTo(name, 2);
        return name;
    }

    public bool Has(TpmaObject attrs) => (ObjectAttributes & attrs) == attrs;
}

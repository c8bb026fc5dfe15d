using Rempart.Tpm.Marshal;

namespace Rempart.Tpm.Structures;

/// <summary>
/// TPMT_SYM_DEF and TPMT_SYM_DEF_OBJECT (Part 2, §11.1.6–11.1.7): a symmetric algorithm,
/// its key size and mode. For XOR, <see cref="KeyBits"/> carries the hash algorithm and
/// there is no mode; for NULL neither field is marshalled.
/// </summary>
public sealed record TpmtSymDef(TpmAlgId Algorithm, ushort KeyBits, TpmAlgId Mode)
{
    public static TpmtSymDef Null { get; } = new(TpmAlgId.Null, 0, TpmAlgId.Null);

    public static TpmtSymDef Aes128Cfb { get; } = new(TpmAlgId.Aes, 128, TpmAlgId.Cfb);

    public static TpmtSymDef Aes256Cfb { get; } = new(TpmAlgId.Aes, 256, TpmAlgId.Cfb);

    public void Write(TpmWriter w)
    {
        w.WriteUInt16((ushort)Algorithm);
        if (Algorithm == TpmAlgId.Null)
        {
            return;
        }
        w.WriteUInt16(KeyBits);
        if (Algorithm != TpmAlgId.Xor)
        {
            w.WriteUInt16((ushort)Mode);
        }
    }

    public static TpmtSymDef Read(ref TpmReader r)
    {
        int at = r.Offset;
        var alg = (TpmAlgId)r.ReadUInt16("TPMT_SYM_DEF.algorithm");
        if (alg == TpmAlgId.Null)
        {
            return Null;
        }
        ushort bits = r.ReadUInt16("TPMT_SYM_DEF.keyBits");
        if (alg == TpmAlgId.Xor)
        {
            return new TpmtSymDef(alg, bits, TpmAlgId.Null);
        }
        if (alg is not (TpmAlgId.Aes or TpmAlgId.Sm4 or TpmAlgId.Camellia or TpmAlgId.Tdes))
        {
            throw new TpmFormatException(at, $"a symmetric algorithm (got 0x{(ushort)alg:x4})");
        }
        var mode = (TpmAlgId)r.ReadUInt16("TPMT_SYM_DEF.mode");
        return new TpmtSymDef(alg, bits, mode);
    }
}

/// <summary>
/// An asymmetric, keyed-hash or KDF scheme: TPMT_RSA_SCHEME, TPMT_ECC_SCHEME,
/// TPMT_KEYEDHASH_SCHEME, TPMT_SIG_SCHEME, TPMT_KDF_SCHEME (Part 2, §11.1.18–11.2.5).
/// <see cref="Count"/> is used by ECDAA only; <see cref="Kdf"/> by XOR only.
/// </summary>
public sealed record TpmtScheme(TpmAlgId Scheme, TpmAlgId HashAlg = TpmAlgId.Null, ushort Count = 0, TpmAlgId Kdf = TpmAlgId.Null)
{
    public static TpmtScheme Null { get; } = new(TpmAlgId.Null);

    public void Write(TpmWriter w)
    {
        w.WriteUInt16((ushort)Scheme);
        switch (Scheme)
        {
            case TpmAlgId.Null:
            case TpmAlgId.RsaEs:
                return;
            case TpmAlgId.EcDaa:
                w.WriteUInt16((ushort)HashAlg).WriteUInt16(Count);
                return;
            case TpmAlgId.Xor:
                w.WriteUInt16((ushort)HashAlg).WriteUInt16((ushort)Kdf);
                return;
            default:
                w.WriteUInt16((ushort)HashAlg);
                return;
        }
    }

    public static TpmtScheme Read(ref TpmReader r, string what)
    {
        int at = r.Offset;
        var scheme = (TpmAlgId)r.ReadUInt16($"{what}.scheme");
        switch (scheme)
        {
            case TpmAlgId.Null:
            case TpmAlgId.RsaEs:
                return new TpmtScheme(scheme);
            case TpmAlgId.EcDaa:
                return new TpmtScheme(scheme, (TpmAlgId)r.ReadUInt16($"{what}.hashAlg"), r.ReadUInt16($"{what}.count"));
            case TpmAlgId.Xor:
                return new TpmtScheme(scheme, (TpmAlgId)r.ReadUInt16($"{what}.hashAlg"), 0, (TpmAlgId)r.ReadUInt16($"{what}.kdf"));
            case TpmAlgId.RsaSsa or TpmAlgId.RsaPss or TpmAlgId.Oaep or TpmAlgId.EcDsa or TpmAlgId.EcDh
                or TpmAlgId.EcSchnorr or TpmAlgId.Sm2 or TpmAlgId.EcMqv or TpmAlgId.Hmac
                or TpmAlgId.Kdf1Sp800_56A or TpmAlgId.Kdf1Sp800_108 or TpmAlgId.Kdf2 or TpmAlgId.Mgf1:
                return new TpmtScheme(scheme, (TpmAlgId)r.ReadUInt16($"{what}.hashAlg"));
            default:
                throw new TpmFormatException(at, $"a known scheme in {what} (got 0x{(ushort)scheme:x4})");
        }
    }
}

using Rempart.Tpm.Marshal;

namespace Rempart.Tpm.Structures;

/// <summary>
/// TPMS_SENSITIVE_CREATE (Part 2, §11.1.15) inside TPM2B_SENSITIVE_CREATE: the new object's
/// authValue and, for sealed data objects, the data. Both are secrets: use a session with
/// parameter encryption (decrypt) when sending this to a TPM.
/// </summary>
public sealed record TpmsSensitiveCreate(byte[] UserAuth, byte[] Data)
{
    public static TpmsSensitiveCreate Empty { get; } = new([], []);

    public void WriteSized(TpmWriter w) => w.WriteSized(inner => inner.WriteSized(UserAuth).WriteSized(Data));

    public static TpmsSensitiveCreate ReadSized(ref TpmReader r)
    {
        var inner = r.ReadSizedReader("TPM2B_SENSITIVE_CREATE");
        var s = new TpmsSensitiveCreate(inner.ReadSized("TPM2B_AUTH", TpmConstants.MaxDigestSize), inner.ReadSized("TPM2B_SENSITIVE_DATA", 256));
        inner.ExpectEnd("TPM2B_SENSITIVE_CREATE");
        return s;
    }
}

/// <summary>TPMS_NV_PUBLIC (Part 2, §13.5) inside TPM2B_NV_PUBLIC.</summary>
public sealed record TpmsNvPublic(uint NvIndex, TpmAlgId NameAlg, TpmaNv Attributes, byte[] AuthPolicy, ushort DataSize)
{
    public void Write(TpmWriter w) =>
        w.WriteUInt32(NvIndex).WriteUInt16((ushort)NameAlg).WriteUInt32((uint)Attributes).WriteSized(AuthPolicy).WriteUInt16(DataSize);

    public void WriteSized(TpmWriter w) => w.WriteSized(Write);

    public static TpmsNvPublic ReadSized(ref TpmReader r)
    {
        var inner = r.ReadSizedReader("TPM2B_NV_PUBLIC");
        int at = inner.Offset;
        uint index = inner.ReadUInt32("TPMS_NV_PUBLIC.nvIndex");
        if (TpmRh.HandleType(index) != TpmRh.HtNvIndex)
        {
            throw new TpmFormatException(at, $"an NV index handle 0x01xxxxxx (got 0x{index:x8})");
        }
        var alg = (TpmAlgId)inner.ReadUInt16("TPMS_NV_PUBLIC.nameAlg");
        if (!TpmHash.IsHash(alg))
        {
            throw new TpmFormatException(at + 4, $"a hash algorithm in TPMS_NV_PUBLIC.nameAlg (got 0x{(ushort)alg:x4})");
        }
        var p = new TpmsNvPublic(index, alg, (TpmaNv)inner.ReadUInt32("TPMS_NV_PUBLIC.attributes"),
            inner.ReadSized("TPMS_NV_PUBLIC.authPolicy", TpmConstants.MaxDigestSize), inner.ReadUInt16("TPMS_NV_PUBLIC.dataSize"));
        inner.ExpectEnd("TPM2B_NV_PUBLIC");
        return p;
    }

    /// <summary>The NV index's Name (Part 1, §16): nameAlg || H(TPMS_NV_PUBLIC).</summary>
    public byte[] Name()
    {
        var w = new TpmWriter();
        Write(w);
        var d = TpmHash.Hash(NameAlg, w.Written);
        return [(byte)((ushort)NameAlg >> 8), (byte)NameAlg, .. d];
    }
}

/// <summary>
/// A TPMT_TK_* ticket (Part 2, §10.7): TK_CREATION, TK_VERIFIED, TK_AUTH and TK_HASHCHECK
/// share one shape — a tag, a hierarchy and an HMAC digest.
/// </summary>
public sealed record TpmtTicket(TpmSt Tag, uint Hierarchy, byte[] Digest)
{
    public static TpmtTicket NullHashCheck { get; } = new(TpmSt.HashCheck, TpmRh.Null, []);

    public void Write(TpmWriter w) => w.WriteUInt16((ushort)Tag).WriteUInt32(Hierarchy).WriteSized(Digest);

    public static TpmtTicket Read(ref TpmReader r, TpmSt expected)
    {
        int at = r.Offset;
        var tag = (TpmSt)r.ReadUInt16("TPMT_TK.tag");
        if (tag != expected)
        {
            throw new TpmFormatException(at, $"ticket tag {expected} (got 0x{(ushort)tag:x4})");
        }
        return new TpmtTicket(tag, r.ReadUInt32("TPMT_TK.hierarchy"), r.ReadSized("TPMT_TK.digest", TpmConstants.MaxDigestSize));
    }
}

/// <summary>
/// TPM2B_ID_OBJECT (Part 2, §12.4.3): a credential blob (integrityHMAC || encIdentity) from
/// MakeCredential, as ActivateCredential takes it.
/// </summary>
public sealed record Tpm2bIdObject(byte[] Credential)
{
    public const int MaxSize = 2 + TpmConstants.MaxDigestSize + 2 + TpmConstants.MaxDigestSize;

    public void Write(TpmWriter w) => w.WriteSized(Credential);

    public static Tpm2bIdObject Read(ref TpmReader r) => new(r.ReadSized("TPM2B_ID_OBJECT", MaxSize));
}

/// <summary>TPM2B_ENCRYPTED_SECRET (Part 2, §11.4.33): a seed encrypted to a TPM key (RSA-OAEP or an ECC point).</summary>
public sealed record Tpm2bEncryptedSecret(byte[] Secret)
{
    public const int MaxSize = TpmtPublic.MaxRsaKeyBytes;

    public void Write(TpmWriter w) => w.WriteSized(Secret);

    public static Tpm2bEncryptedSecret Read(ref TpmReader r) => new(r.ReadSized("TPM2B_ENCRYPTED_SECRET", MaxSize));
}

/// <summary>TPMS_CONTEXT (Part 2, §14.5): a saved object or session context.</summary>
public sealed record TpmsContext(ulong Sequence, uint SavedHandle, uint Hierarchy, byte[] ContextBlob)
{
    public void Write(TpmWriter w) => w.WriteUInt64(Sequence).WriteUInt32(SavedHandle).WriteUInt32(Hierarchy).WriteSized(ContextBlob);

    public static TpmsContext Read(ref TpmReader r) => new(r.ReadUInt64("TPMS_CONTEXT.sequence"), r.ReadUInt32("TPMS_CONTEXT.savedHandle"),
        r.ReadUInt32("TPMS_CONTEXT.hierarchy"), r.ReadSized("TPMS_CONTEXT.contextBlob", 8192));
}

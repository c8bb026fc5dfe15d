using Rempart.Tpm.Marshal;

namespace Rempart.Tpm.Structures;

/// <summary>TPMS_CLOCK_INFO (Part 2, §10.11.1).</summary>
public sealed record TpmsClockInfo(ulong Clock, uint ResetCount, uint RestartCount, bool Safe)
{
    public void Write(TpmWriter w) =>
        w.WriteUInt64(Clock).WriteUInt32(ResetCount).WriteUInt32(RestartCount).WriteByte(Safe ? (byte)1 : (byte)0);

    public static TpmsClockInfo Read(ref TpmReader r)
    {
        ulong clock = r.ReadUInt64("TPMS_CLOCK_INFO.clock");
        uint reset = r.ReadUInt32("TPMS_CLOCK_INFO.resetCount");
        uint restart = r.ReadUInt32("TPMS_CLOCK_INFO.restartCount");
        int at = r.Offset;
        byte safe = r.ReadByte("TPMS_CLOCK_INFO.safe");
        if (safe > 1)
        {
            throw new TpmFormatException(at, $"TPMI_YES_NO 0 or 1 in TPMS_CLOCK_INFO.safe (got {safe})");
        }
        return new TpmsClockInfo(clock, reset, restart, safe == 1);
    }
}

/// <summary>TPMS_TIME_INFO (Part 2, §10.11.6): time since the last TPM_Init, and the clock.</summary>
public sealed record TpmsTimeInfo(ulong Time, TpmsClockInfo ClockInfo)
{
    public void Write(TpmWriter w)
    {
        w.WriteUInt64(Time);
        ClockInfo.Write(w);
    }

    public static TpmsTimeInfo Read(ref TpmReader r) => new(r.ReadUInt64("TPMS_TIME_INFO.time"), TpmsClockInfo.Read(ref r));
}

/// <summary>TPMU_ATTEST (Part 2, §10.12.11): what an attestation structure attests.</summary>
public abstract record TpmuAttest
{
    internal abstract TpmSt Tag { get; }

    internal abstract void Write(TpmWriter w);
}

/// <summary>TPMS_QUOTE_INFO (Part 2, §10.12.4).</summary>
public sealed record TpmsQuoteInfo(TpmlPcrSelection PcrSelect, byte[] PcrDigest) : TpmuAttest
{
    internal override TpmSt Tag => TpmSt.AttestQuote;

    internal override void Write(TpmWriter w)
    {
        PcrSelect.Write(w);
        w.WriteSized(PcrDigest);
    }
}

/// <summary>TPMS_CERTIFY_INFO (Part 2, §10.12.3).</summary>
public sealed record TpmsCertifyInfo(byte[] Name, byte[] QualifiedName) : TpmuAttest
{
    internal override TpmSt Tag => TpmSt.AttestCertify;

    internal override void Write(TpmWriter w) => w.WriteSized(Name).WriteSized(QualifiedName);
}

/// <summary>TPMS_CREATION_INFO (Part 2, §10.12.8).</summary>
public sealed record TpmsCreationInfo(byte[] ObjectName, byte[] CreationHash) : TpmuAttest
{
    internal override TpmSt Tag => TpmSt.AttestCreation;

    internal override void Write(TpmWriter w) => w.WriteSized(ObjectName).WriteSized(CreationHash);
}

/// <summary>TPMS_NV_CERTIFY_INFO (Part 2, §10.12.9).</summary>
public sealed record TpmsNvCertifyInfo(byte[] IndexName, ushort Offset, byte[] NvContents) : TpmuAttest
{
    internal override TpmSt Tag => TpmSt.AttestNv;

    internal override void Write(TpmWriter w) => w.WriteSized(IndexName).WriteUInt16(Offset).WriteSized(NvContents);
}

/// <summary>TPMS_NV_DIGEST_CERTIFY_INFO (Part 2, §10.12.10).</summary>
public sealed record TpmsNvDigestCertifyInfo(byte[] IndexName, byte[] NvDigest) : TpmuAttest
{
    internal override TpmSt Tag => TpmSt.AttestNvDigest;

    internal override void Write(TpmWriter w) => w.WriteSized(IndexName).WriteSized(NvDigest);
}

/// <summary>TPMS_TIME_ATTEST_INFO (Part 2, §10.12.2).</summary>
public sealed record TpmsTimeAttestInfo(TpmsTimeInfo Time, ulong FirmwareVersion) : TpmuAttest
{
    internal override TpmSt Tag => TpmSt.AttestTime;

    internal override void Write(TpmWriter w)
    {
        Time.Write(w);
        w.WriteUInt64(FirmwareVersion);
    }
}

/// <summary>TPMS_COMMAND_AUDIT_INFO (Part 2, §10.12.6).</summary>
public sealed record TpmsCommandAuditInfo(ulong AuditCounter, TpmAlgId DigestAlg, byte[] AuditDigest, byte[] CommandDigest) : TpmuAttest
{
    internal override TpmSt Tag => TpmSt.AttestCommandAudit;

    internal override void Write(TpmWriter w) =>
        w.WriteUInt64(AuditCounter).WriteUInt16((ushort)DigestAlg).WriteSized(AuditDigest).WriteSized(CommandDigest);
}

/// <summary>TPMS_SESSION_AUDIT_INFO (Part 2, §10.12.5).</summary>
public sealed record TpmsSessionAuditInfo(bool ExclusiveSession, byte[] SessionDigest) : TpmuAttest
{
    internal override TpmSt Tag => TpmSt.AttestSessionAudit;

    internal override void Write(TpmWriter w) => w.WriteByte(ExclusiveSession ? (byte)1 : (byte)0).WriteSized(SessionDigest);
}

/// <summary>
/// TPMS_ATTEST (Part 2, §10.12.12): the structure a TPM signs in Quote, Certify,
/// CertifyCreation, NV_Certify, GetTime and the audit commands. Parsing does not make it
/// trustworthy: only a verified signature by a trusted key does (see QuoteVerifier).
/// </summary>
public sealed record TpmsAttest(
    uint Magic,
    TpmSt Type,
    byte[] QualifiedSigner,
    byte[] ExtraData,
    TpmsClockInfo ClockInfo,
    ulong FirmwareVersion,
    TpmuAttest Attested)
{
    public const int MaxNameSize = 2 + TpmConstants.MaxDigestSize;

    public void Write(TpmWriter w)
    {
        w.WriteUInt32(Magic).WriteUInt16((ushort)Type).WriteSized(QualifiedSigner).WriteSized(ExtraData);
        ClockInfo.Write(w);
        w.WriteUInt64(FirmwareVersion);
        Attested.Write(w);
    }

    public byte[] ToBytes()
    {
        var w = new TpmWriter();
        Write(w);
        return w.ToArray();
    }

    public static TpmsAttest Read(ref TpmReader r)
    {
        uint magic = r.ReadUInt32("TPMS_ATTEST.magic");
        int typeAt = r.Offset;
        var type = (TpmSt)r.ReadUInt16("TPMS_ATTEST.type");
        var signer = r.ReadSized("TPMS_ATTEST.qualifiedSigner", MaxNameSize);
        var extra = r.ReadSized("TPMS_ATTEST.extraData", TpmConstants.MaxDigestSize);
        var clock = TpmsClockInfo.Read(ref r);
        ulong fw = r.ReadUInt64("TPMS_ATTEST.firmwareVersion");
        TpmuAttest attested = type switch
        {
            TpmSt.AttestQuote => new TpmsQuoteInfo(TpmlPcrSelection.Read(ref r), r.ReadSized("TPMS_QUOTE_INFO.pcrDigest", TpmConstants.MaxDigestSize)),
            TpmSt.AttestCertify => new TpmsCertifyInfo(r.ReadSized("TPMS_CERTIFY_INFO.name", MaxNameSize), r.ReadSized("TPMS_CERTIFY_INFO.qualifiedName", MaxNameSize)),
            TpmSt.AttestCreation => new TpmsCreationInfo(r.ReadSized("TPMS_CREATION_INFO.objectName", MaxNameSize), r.ReadSized("TPMS_CREATION_INFO.creationHash", TpmConstants.MaxDigestSize)),
            TpmSt.AttestNv => new TpmsNvCertifyInfo(r.ReadSized("TPMS_NV_CERTIFY_INFO.indexName", MaxNameSize), r.ReadUInt16("TPMS_NV_CERTIFY_INFO.offset"), r.ReadSized("TPMS_NV_CERTIFY_INFO.nvContents", 2048)),
            TpmSt.AttestNvDigest => new TpmsNvDigestCertifyInfo(r.ReadSized("TPMS_NV_DIGEST_CERTIFY_INFO.indexName", MaxNameSize), r.ReadSized("TPMS_NV_DIGEST_CERTIFY_INFO.nvDigest", TpmConstants.MaxDigestSize)),
            TpmSt.AttestTime => new TpmsTimeAttestInfo(TpmsTimeInfo.Read(ref r), r.ReadUInt64("TPMS_TIME_ATTEST_INFO.firmwareVersion")),
            TpmSt.AttestCommandAudit => new TpmsCommandAuditInfo(r.ReadUInt64("TPMS_COMMAND_AUDIT_INFO.auditCounter"), (TpmAlgId)r.ReadUInt16("TPMS_COMMAND_AUDIT_INFO.digestAlg"), r.ReadSized("TPMS_COMMAND_AUDIT_INFO.auditDigest", TpmConstants.MaxDigestSize), r.ReadSized("TPMS_COMMAND_AUDIT_INFO.commandDigest", TpmConstants.MaxDigestSize)),
            TpmSt.AttestSessionAudit => new TpmsSessionAuditInfo(ReadYesNo(ref r), r.ReadSized("TPMS_SESSION_AUDIT_INFO.sessionDigest", TpmConstants.MaxDigestSize)),
            _ => throw new TpmFormatException(typeAt, $"a TPM_ST_ATTEST_* type (got 0x{(ushort)type:x4})"),
        };
        return new TpmsAttest(magic, type, signer, extra, clock, fw, attested);
    }

    private static bool ReadYesNo(ref TpmReader r)
    {
        int at = r.Offset;
        byte b = r.ReadByte("TPMI_YES_NO");
        return b switch
        {
            0 => false,
            1 => true,
            _ => throw new TpmFormatException(at, $"TPMI_YES_NO 0 or 1 (got {b})"),
        };
    }

    /// <summary>Parses a bare TPMS_ATTEST (tpm2-tools' quote.msg), rejecting trailing bytes.</summary>
    public static TpmsAttest Parse(ReadOnlySpan<byte> bytes)
    {
        var r = new TpmReader(bytes);
        var a = Read(ref r);
        r.ExpectEnd("TPMS_ATTEST");
        return a;
    }
}

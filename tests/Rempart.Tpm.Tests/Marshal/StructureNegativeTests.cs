using System.Buffers.Binary;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Templates;

namespace Rempart.Tpm.Tests.Marshal;

/// <summary>
/// One malformation per case, each with the byte offset the parser must report. Offsets are
/// worked out by hand from the TPM 2.0 Library Part 2 layouts written above each builder,
/// never copied from what the code reports. The rule for where an error is:
/// a value out of range (an unknown selector, a size above its maximum, a YES_NO of 2) is
/// reported at the first byte of that field; an item that is cut short at the first byte of
/// that item (for a TPM2B_, its data just after the size field, since the size was fine); a
/// byte left over at the first byte left over.
/// </summary>
public sealed class StructureNegativeTests
{
    private delegate void ReadFn(ref TpmReader r);

    private sealed record Case(Func<byte[]> Input, Action<byte[]> Parse, int Offset);

    private static readonly Action<byte[]> Public2b = b => TpmtPublic.ParseSized(b);
    private static readonly Action<byte[]> Attest = b => TpmsAttest.Parse(b);
    private static readonly Action<byte[]> Signature = b => TpmtSignature.Parse(b);

    private static Action<byte[]> Reader(ReadFn read) => b =>
    {
        var r = new TpmReader(b);
        read(ref r);
        r.ExpectEnd("test input");
    };

    // AK RSA template as TPM2B_PUBLIC (Part 2 §12.2.5, §12.2.4, §12.2.3.5), 26 bytes:
    //   0 size=24 | 2 type | 4 nameAlg | 6 objectAttributes(4) | 10 authPolicy.size=0
    //   12 symmetric.algorithm=NULL | 14 scheme=RSASSA | 16 scheme.hashAlg | 18 keyBits
    //   20 exponent(4) | 24 unique.size=0 | 26 end
    private static byte[] AkRsa(byte[]? modulus = null) =>
        KeyTemplates.AkRsa2048.WithUnique(new TpmBufferId(modulus ?? [])).ToSizedBytes();

    // EK RSA template L-1, 316 bytes:
    //   0 size=314 | 2 type | 4 nameAlg | 6 attributes(4) | 10 authPolicy.size=32 | 12..43 policy
    //   44 symmetric.algorithm=AES | 46 keyBits | 48 mode | 50 scheme=NULL | 52 keyBits
    //   54 exponent(4) | 58 unique.size=256 | 60..315 modulus
    private static byte[] EkRsa() => KeyTemplates.EkRsa2048.ToSizedBytes();

    // AK ECC template with a P-256 point (Part 2 §12.2.3.6, §11.2.5.2):
    //   0 size | 2 type | 4 nameAlg | 6 attributes(4) | 10 authPolicy.size=0
    //   12 symmetric=NULL | 14 scheme=ECDSA | 16 scheme.hashAlg | 18 curveID | 20 kdf=NULL
    //   22 unique.x.size | 24..(24+x) x | y.size | y
    private static byte[] AkEcc(int x = 32, int y = 32) =>
        KeyTemplates.AkEccP256.WithUnique(new TpmsEccPoint(Fill(x, 1), Fill(y, 2))).ToSizedBytes();

    // Sealed-data KEYEDHASH object (Part 2 §12.2.3.3):
    //   0 size | 2 type | 4 nameAlg | 6 attributes(4) | 10 authPolicy.size=32 | 12..43 policy
    //   44 scheme=NULL | 46 unique.size | 48 unique
    private static byte[] Sealed(int unique = 32) =>
        KeyTemplates.SealedData(Fill(32, 3)).WithUnique(new TpmBufferId(Fill(unique, 4))).ToSizedBytes();

    // SYMCIPHER object (Part 2 §12.2.3.2, TPMT_SYM_DEF_OBJECT §11.1.7):
    //   0 size | 2 type | 4 nameAlg | 6 attributes(4) | 10 authPolicy.size=0
    //   12 sym.algorithm=AES | 14 sym.keyBits | 16 sym.mode | 18 unique.size | 20 unique
    private static byte[] SymCipher(int unique = 32) =>
        new TpmtPublic(TpmAlgId.SymCipher, TpmAlgId.Sha256,
            TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.SensitiveDataOrigin | TpmaObject.UserWithAuth | TpmaObject.Decrypt,
            [], new TpmsSymCipherParms(TpmtSymDef.Aes128Cfb), new TpmBufferId(Fill(unique, 5))).ToSizedBytes();

    // TPMS_ATTEST (Part 2 §10.12.12) with a 34-byte signer Name and 32 bytes of extraData:
    //   0 magic(4) | 4 type | 6 qualifiedSigner.size=34 | 8..41 | 42 extraData.size=32 | 44..75
    //   76 clockInfo.clock(8) | 84 resetCount(4) | 88 restartCount(4) | 92 safe
    //   93 firmwareVersion(8) | 101 attested
    // Quote (§10.12.4, TPML_PCR_SELECTION §10.9.7, TPMS_PCR_SELECTION §10.6.2):
    //   101 count(4) | 105 hash | 107 sizeofSelect=3 | 108..110 pcrSelect | 111 pcrDigest.size | 113..144 | 145 end
    private static byte[] AttestBytes(TpmuAttest attested, byte[]? signer = null, byte[]? extra = null) =>
        new TpmsAttest(TpmConstants.Generated, Tag(attested), signer ?? Name(6), extra ?? Fill(32, 7),
            new TpmsClockInfo(0x1122334455667788, 3, 4, true), 0x2023_0117_0000_0000, attested).ToBytes();

    private static TpmuAttest QuoteInfo(TpmlPcrSelection? select = null, int digest = 32) =>
        new TpmsQuoteInfo(select ?? TpmlPcrSelection.Of(TpmAlgId.Sha256, 0, 1, 2, 3, 4, 5, 6, 7), Fill(digest, 8));

    // TPMT_SIGNATURE (Part 2 §11.3.4): 0 sigAlg | 2 hash | RSA: 4 sig.size, 6 sig;
    // ECC: 4 signatureR.size, 6 R, then signatureS.size, S.
    private static byte[] Rsa(TpmAlgId scheme, int size = 256) => TpmtSignature.RsaSignature(scheme, TpmAlgId.Sha256, Fill(size, 9)).ToBytes();

    private static byte[] Ecdsa(int r = 32, int s = 32) => TpmtSignature.EccSignature(TpmAlgId.EcDsa, TpmAlgId.Sha256, Fill(r, 10), Fill(s, 11)).ToBytes();

    // TPM2B_NV_PUBLIC (Part 2 §13.6) around TPMS_NV_PUBLIC (§13.5):
    //   0 size | 2 nvIndex(4) | 6 nameAlg | 8 attributes(4) | 12 authPolicy.size | 14 dataSize | 16 end
    private static byte[] NvPublic(byte[]? policy = null) =>
        Write(w => new TpmsNvPublic(0x01500001, TpmAlgId.Sha256, TpmaNv.OwnerWrite | TpmaNv.OwnerRead, policy ?? [], 32).WriteSized(w));

    private static readonly Dictionary<string, Case> Cases = new()
    {
        // TPM2B_PUBLIC / TPMT_PUBLIC
        ["tpm2b_public_empty_buffer"] = new(() => [], Public2b, 0),
        ["tpm2b_public_size_cut_to_1_byte"] = new(() => [0x00], Public2b, 0),
        ["tpm2b_public_size_zero"] = new(() => [0x00, 0x00], Public2b, 2), // "=" size: TPMT_PUBLIC.type expected at 2
        ["tpm2b_public_size_beyond_buffer"] = new(() => Put16(AkRsa(), 0, 25), Public2b, 2),
        ["tpm2b_public_size_0xFFFF"] = new(() => Put16(AkRsa(), 0, 0xFFFF), Public2b, 2),
        ["tpm2b_public_trailing_inside_size"] = new(() => Append(Put16(AkRsa(), 0, 25), 0), Public2b, 26),
        ["tpm2b_public_trailing_after_size"] = new(() => Append(AkRsa(), 0), Public2b, 26),
        ["tpmt_public_unknown_type"] = new(() => Put16(AkRsa(), 2, 0x0002), Public2b, 2),
        ["tpmt_public_type_null"] = new(() => Put16(AkRsa(), 2, (ushort)TpmAlgId.Null), Public2b, 2),
        ["tpmt_public_nameAlg_aes"] = new(() => Put16(AkRsa(), 4, (ushort)TpmAlgId.Aes), Public2b, 4),
        ["tpmt_public_authPolicy_65_bytes"] = new(() => (KeyTemplates.AkRsa2048 with { AuthPolicy = Fill(65, 12) }).ToSizedBytes(), Public2b, 10),
        ["tpmt_public_cut_in_objectAttributes"] = new(() => CutSized(AkRsa(), 8), Public2b, 6),
        ["rsa_symmetric_unknown_algorithm"] = new(() => Put16(EkRsa(), 44, 0x0099), Public2b, 44),
        ["rsa_scheme_unknown"] = new(() => Put16(AkRsa(), 14, 0x0099), Public2b, 14),
        ["rsa_cut_in_exponent"] = new(() => CutSized(AkRsa(), 22), Public2b, 20),
        ["rsa_modulus_513_bytes"] = new(() => AkRsa(Fill(513, 13)), Public2b, 24),
        ["rsa_modulus_shorter_than_its_size"] = new(() => CutSized(EkRsa(), 200), Public2b, 60),
        ["ecc_point_coordinate_67_bytes"] = new(() => AkEcc(x: 67), Public2b, 22),
        ["ecc_point_y_67_bytes"] = new(() => AkEcc(y: 67), Public2b, 24 + 32),
        ["ecc_scheme_unknown"] = new(() => Put16(AkEcc(), 14, 0x0099), Public2b, 14),
        ["ecc_kdf_unknown"] = new(() => Put16(AkEcc(), 20, 0x0099), Public2b, 20),
        ["ecc_point_y_missing"] = new(() => CutSized(AkEcc(), 24 + 32), Public2b, 56),
        ["keyedhash_scheme_unknown"] = new(() => Put16(Sealed(), 44, 0x0099), Public2b, 44),
        ["keyedhash_unique_65_bytes"] = new(() => Sealed(65), Public2b, 46),
        ["symcipher_unknown_algorithm"] = new(() => Put16(SymCipher(), 12, 0x0099), Public2b, 12),
        ["symcipher_unique_65_bytes"] = new(() => SymCipher(65), Public2b, 18),

        // TPMS_ATTEST
        ["attest_empty"] = new(() => [], Attest, 0),
        ["attest_trailing_bytes"] = new(() => Append(AttestBytes(QuoteInfo()), 0), Attest, 145),
        ["attest_unknown_type"] = new(() => Put16(AttestBytes(QuoteInfo()), 4, 0x8000), Attest, 4),
        ["attest_qualifiedSigner_67_bytes"] = new(() => AttestBytes(QuoteInfo(), signer: Fill(67, 14)), Attest, 6),
        ["attest_extraData_65_bytes"] = new(() => AttestBytes(QuoteInfo(), extra: Fill(65, 15)), Attest, 42),
        ["attest_cut_in_clock"] = new(() => AttestBytes(QuoteInfo())[..80], Attest, 76),
        ["clock_safe_is_2"] = new(() => Put8(AttestBytes(QuoteInfo()), 92, 2), Attest, 92),
        ["clock_safe_is_0xFF"] = new(() => Put8(AttestBytes(QuoteInfo()), 92, 0xFF), Attest, 92),
        ["pcr_selection_count_17"] = new(() => Put32(AttestBytes(QuoteInfo()), 101, 17), Attest, 101),
        ["pcr_selection_count_0xFFFFFFFF"] = new(() => Put32(AttestBytes(QuoteInfo()), 101, 0xFFFFFFFF), Attest, 101),
        ["pcr_selection_sizeofSelect_5"] = new(() => Put8(AttestBytes(QuoteInfo()), 107, 5), Attest, 107),
        ["pcr_selection_sizeofSelect_2"] = new(() => Put8(AttestBytes(QuoteInfo()), 107, 2), Attest, 107),
        ["pcr_selection_sizeofSelect_0"] = new(() => Put8(AttestBytes(QuoteInfo()), 107, 0), Attest, 107),
        ["quote_pcrDigest_65_bytes"] = new(() => AttestBytes(QuoteInfo(digest: 65)), Attest, 111),
        ["quote_pcrDigest_missing"] = new(() => AttestBytes(QuoteInfo())[..111], Attest, 111),
        // Certify (§10.12.3): 101 name.size | 103 name | qualifiedName.size
        ["certify_name_67_bytes"] = new(() => AttestBytes(new TpmsCertifyInfo(Fill(67, 16), Name(17))), Attest, 101),
        ["certify_qualifiedName_67_bytes"] = new(() => AttestBytes(new TpmsCertifyInfo(Name(16), Fill(67, 17))), Attest, 137),
        // Creation (§10.12.8): 101 objectName.size | 103..136 | 137 creationHash.size
        ["creation_hash_65_bytes"] = new(() => AttestBytes(new TpmsCreationInfo(Name(18), Fill(65, 19))), Attest, 137),
        // NV (§10.12.9): 101 indexName.size | 103..136 | 137 offset | 139 nvContents.size | 141 contents
        ["nv_certify_cut_in_offset"] = new(() => AttestBytes(new TpmsNvCertifyInfo(Name(20), 0, Fill(16, 21)))[..138], Attest, 137),
        ["nv_certify_contents_shorter_than_size"] = new(() => AttestBytes(new TpmsNvCertifyInfo(Name(20), 0, Fill(16, 21)))[..150], Attest, 141),
        // Time (§10.12.2, TPMS_TIME_INFO §10.11.6): 101 time(8) | 109 clock(8) | 117 reset | 121 restart | 125 safe | 126 firmwareVersion
        ["time_clock_safe_is_2"] = new(() => Put8(AttestBytes(TimeInfo()), 125, 2), Attest, 125),
        ["time_cut_in_firmwareVersion"] = new(() => AttestBytes(TimeInfo())[..130], Attest, 126),
        // Session audit (§10.12.5): 101 exclusiveSession | 102 sessionDigest.size
        ["session_audit_exclusive_is_2"] = new(() => Put8(AttestBytes(new TpmsSessionAuditInfo(false, Fill(32, 22))), 101, 2), Attest, 101),

        // TPMT_SIGNATURE
        ["signature_empty"] = new(() => [], Signature, 0),
        ["signature_unknown_scheme"] = new(() => Put16(Rsa(TpmAlgId.RsaSsa), 0, 0x0099), Signature, 0),
        ["signature_scheme_rsaes"] = new(() => Put16(Rsa(TpmAlgId.RsaSsa), 0, (ushort)TpmAlgId.RsaEs), Signature, 0),
        ["signature_rsassa_sig_513_bytes"] = new(() => Rsa(TpmAlgId.RsaSsa, 513), Signature, 4),
        ["signature_rsapss_sig_shorter_than_size"] = new(() => Rsa(TpmAlgId.RsaPss)[..100], Signature, 6),
        ["signature_rsassa_trailing_bytes"] = new(() => Append(Rsa(TpmAlgId.RsaSsa), 0), Signature, 262),
        ["signature_ecdsa_r_67_bytes"] = new(() => Ecdsa(r: 67), Signature, 4),
        ["signature_ecdsa_s_67_bytes"] = new(() => Ecdsa(s: 67), Signature, 38),
        ["signature_ecdsa_s_missing"] = new(() => Ecdsa()[..38], Signature, 38),
        ["signature_hmac_unknown_hash"] = new(() => new TpmtSignature(TpmAlgId.Hmac, TpmAlgId.Aes, Fill(32, 23), [], []).ToBytes(), Signature, 2),

        // Lists and digests (Part 2 §10.9): 0 count(4) | 4 first item
        ["tpml_digest_count_9"] = new(() => Write(w => new TpmlDigest([.. Enumerable.Repeat(Fill(32, 24), 9)]).Write(w)), Reader((ref r) => TpmlDigest.Read(ref r)), 0),
        ["tpml_digest_digest_65_bytes"] = new(() => Write(w => new TpmlDigest([Fill(65, 25)]).Write(w)), Reader((ref r) => TpmlDigest.Read(ref r)), 4),
        ["tpml_digest_second_digest_cut"] = new(() => Write(w => new TpmlDigest([Fill(32, 26), Fill(32, 27)]).Write(w))[..50], Reader((ref r) => TpmlDigest.Read(ref r)), 40),
        ["tpml_digest_values_count_17"] = new(() => Put32(Write(w => new TpmlDigestValues([new TpmtHa(TpmAlgId.Sha1, Fill(20, 28))]).Write(w)), 0, 17), Reader((ref r) => TpmlDigestValues.Read(ref r)), 0),
        ["tpmt_ha_unknown_hash"] = new(() => Write(w => new TpmtHa(TpmAlgId.Aes, Fill(32, 29)).Write(w)), Reader((ref r) => TpmtHa.Read(ref r)), 0),
        ["tpmt_ha_sha256_digest_31_bytes"] = new(() => Write(w => new TpmtHa(TpmAlgId.Sha256, Fill(31, 30)).Write(w)), Reader((ref r) => TpmtHa.Read(ref r)), 2),
        ["tpml_pcr_selection_count_17"] = new(() => Write(w => new TpmlPcrSelection([.. Enumerable.Repeat(new TpmsPcrSelection(TpmAlgId.Sha256, [0]), 17)]).Write(w)), Reader((ref r) => TpmlPcrSelection.Read(ref r)), 0),
        // 0 count | 4 hash | 6 sizeofSelect=3 | 7..9 pcrSelect
        ["tpml_pcr_selection_pcrSelect_cut"] = new(() => Write(w => TpmlPcrSelection.Of(TpmAlgId.Sha256, 0, 7).Write(w))[..9], Reader((ref r) => TpmlPcrSelection.Read(ref r)), 7),

        // TPM2B_NV_PUBLIC
        ["nv_public_index_not_an_nv_handle"] = new(() => Put32(NvPublic(), 2, 0x81000001), Reader((ref r) => TpmsNvPublic.ReadSized(ref r)), 2),
        ["nv_public_nameAlg_not_a_hash"] = new(() => Put16(NvPublic(), 6, (ushort)TpmAlgId.Aes), Reader((ref r) => TpmsNvPublic.ReadSized(ref r)), 6),
        ["nv_public_authPolicy_65_bytes"] = new(() => NvPublic(Fill(65, 31)), Reader((ref r) => TpmsNvPublic.ReadSized(ref r)), 12),
        ["nv_public_trailing_inside_size"] = new(() => Append(Put16(NvPublic(), 0, 15), 0), Reader((ref r) => TpmsNvPublic.ReadSized(ref r)), 16),

        // TPM2B_SENSITIVE_CREATE (§11.1.16): 0 size | 2 userAuth.size | 4 userAuth | data.size | data
        ["sensitive_create_userAuth_65_bytes"] = new(() => Write(w => new TpmsSensitiveCreate(Fill(65, 32), []).WriteSized(w)), Reader((ref r) => TpmsSensitiveCreate.ReadSized(ref r)), 2),
        ["sensitive_create_data_257_bytes"] = new(() => Write(w => new TpmsSensitiveCreate([], Fill(257, 33)).WriteSized(w)), Reader((ref r) => TpmsSensitiveCreate.ReadSized(ref r)), 4),
        ["sensitive_create_trailing_inside_size"] = new(() => Append(Put16(Write(w => TpmsSensitiveCreate.Empty.WriteSized(w)), 0, 5), 0), Reader((ref r) => TpmsSensitiveCreate.ReadSized(ref r)), 6),

        // TPMT_TK_CREATION (§10.7.3): 0 tag | 2 hierarchy(4) | 6 digest.size
        ["ticket_wrong_tag"] = new(() => Write(w => TpmtTicket.NullHashCheck.Write(w)), Reader((ref r) => TpmtTicket.Read(ref r, TpmSt.Creation)), 0),
        ["ticket_digest_65_bytes"] = new(() => Write(w => new TpmtTicket(TpmSt.Creation, TpmRh.Owner, Fill(65, 34)).Write(w)), Reader((ref r) => TpmtTicket.Read(ref r, TpmSt.Creation)), 6),

        // TPM2B_ID_OBJECT (§12.4.3) and TPM2B_ENCRYPTED_SECRET (§11.4.33): size at 0
        ["id_object_133_bytes"] = new(() => Write(w => new Tpm2bIdObject(Fill(133, 35)).Write(w)), Reader((ref r) => Tpm2bIdObject.Read(ref r)), 0),
        ["encrypted_secret_513_bytes"] = new(() => Write(w => new Tpm2bEncryptedSecret(Fill(513, 36)).Write(w)), Reader((ref r) => Tpm2bEncryptedSecret.Read(ref r)), 0),

        // TPMS_CONTEXT (§14.5): 0 sequence(8) | 8 savedHandle | 12 hierarchy | 16 contextBlob.size
        ["context_blob_8193_bytes"] = new(() => Write(w => new TpmsContext(1, 0x80000000, TpmRh.Owner, Fill(8193, 37)).Write(w)), Reader((ref r) => TpmsContext.Read(ref r)), 16),
        ["context_cut_in_hierarchy"] = new(() => Write(w => new TpmsContext(1, 0x80000000, TpmRh.Owner, Fill(10, 38)).Write(w))[..14], Reader((ref r) => TpmsContext.Read(ref r)), 12),
    };

    public static TheoryData<string> Names
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (var name in Cases.Keys)
            {
                data.Add(name);
            }
            return data;
        }
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void Malformed_input_is_rejected_at_its_offset(string name)
    {
        var c = Cases[name];
        var input = c.Input();
        var ex = Assert.Throws<TpmFormatException>(() => c.Parse(input));
        Assert.Equal(c.Offset, ex.Offset);
    }

    [Fact]
    public void Every_builder_is_valid_before_it_is_corrupted()
    {
        Assert.Equal(26, AkRsa().Length);
        Assert.Equal(316, EkRsa().Length);
        Assert.Equal(145, AttestBytes(QuoteInfo()).Length);
        foreach (var b in new[] { AkRsa(), EkRsa(), AkEcc(), Sealed(), SymCipher() })
        {
            TpmtPublic.ParseSized(b);
        }
        foreach (var a in new[] { QuoteInfo(), TimeInfo(), new TpmsCertifyInfo(Name(16), Name(17)), new TpmsSessionAuditInfo(false, Fill(32, 22)) })
        {
            TpmsAttest.Parse(AttestBytes(a));
        }
        TpmsAttest.Parse(AttestBytes(new TpmsNvCertifyInfo(Name(20), 0, Fill(16, 21))));
        TpmtSignature.Parse(Rsa(TpmAlgId.RsaSsa));
        TpmtSignature.Parse(Ecdsa());
        Reader((ref r) => TpmsNvPublic.ReadSized(ref r))(NvPublic());
    }

    private static TpmuAttest TimeInfo() =>
        new TpmsTimeAttestInfo(new TpmsTimeInfo(123_456, new TpmsClockInfo(987_654, 1, 2, false)), 0x0001_0002_0003_0004);

    private static TpmSt Tag(TpmuAttest a) => a switch
    {
        TpmsQuoteInfo => TpmSt.AttestQuote,
        TpmsCertifyInfo => TpmSt.AttestCertify,
        TpmsCreationInfo => TpmSt.AttestCreation,
        TpmsNvCertifyInfo => TpmSt.AttestNv,
        TpmsTimeAttestInfo => TpmSt.AttestTime,
        TpmsSessionAuditInfo => TpmSt.AttestSessionAudit,
        _ => throw new ArgumentException("no tag for " + a.GetType().Name),
    };

    /// <summary>A SHA-256 Name: 0x000B then 32 bytes (34 in all).</summary>
    private static byte[] Name(int seed) => [0x00, 0x0B, .. Fill(32, seed)];

    internal static byte[] Fill(int length, int seed) =>
        [.. Enumerable.Range(0, length).Select(i => (byte)((seed * 31) + (i * 7) + 1))];

    private static byte[] Write(Action<TpmWriter> body)
    {
        var w = new TpmWriter();
        body(w);
        return w.ToArray();
    }

    private static byte[] Put8(byte[] b, int at, byte value)
    {
        var c = (byte[])b.Clone();
        c[at] = value;
        return c;
    }

    private static byte[] Put16(byte[] b, int at, ushort value)
    {
        var c = (byte[])b.Clone();
        BinaryPrimitives.WriteUInt16BigEndian(c.AsSpan(at), value);
        return c;
    }

    private static byte[] Put32(byte[] b, int at, uint value)
    {
        var c = (byte[])b.Clone();
        BinaryPrimitives.WriteUInt32BigEndian(c.AsSpan(at), value);
        return c;
    }

    private static byte[] Append(byte[] b, params byte[] extra) => [.. b, .. extra];

    /// <summary>Cuts a TPM2B_ to <paramref name="length"/> bytes and fixes its size, so only what is inside falls short.</summary>
    private static byte[] CutSized(byte[] b, int length) => Put16(b[..length], 0, (ushort)(length - 2));
}

using Rempart.Tpm.Marshal;

namespace Rempart.Tpm.Structures;

/// <summary>
/// TPMT_SIGNATURE (Part 2, §11.3.4). RSASSA and RSAPSS carry the signature bytes in
/// <see cref="Rsa"/>; ECDSA, ECDAA, SM2 and ECSCHNORR carry <see cref="R"/> and
/// <see cref="S"/>; HMAC carries the digest in <see cref="Rsa"/>; NULL carries nothing.
/// </summary>
public sealed record TpmtSignature(TpmAlgId SigAlg, TpmAlgId Hash, byte[] Rsa, byte[] R, byte[] S)
{
    public static TpmtSignature RsaSignature(TpmAlgId scheme, TpmAlgId hash, byte[] sig) => new(scheme, hash, sig, [], []);

    public static TpmtSignature EccSignature(TpmAlgId scheme, TpmAlgId hash, byte[] r, byte[] s) => new(scheme, hash, [], r, s);

    public bool IsEcc => SigAlg is TpmAlgId.EcDsa or TpmAlgId.EcDaa or TpmAlgId.Sm2 or TpmAlgId.EcSchnorr;

    public void Write(TpmWriter w)
    {
        w.WriteUInt16((ushort)SigAlg);
        switch (SigAlg)
        {
            case TpmAlgId.Null:
                return;
            case TpmAlgId.RsaSsa or TpmAlgId.RsaPss:
                w.WriteUInt16((ushort)Hash).WriteSized(Rsa);
                return;
            case TpmAlgId.Hmac:
                w.WriteUInt16((ushort)Hash).WriteBytes(Rsa);
                return;
            default:
                w.WriteUInt16((ushort)Hash).WriteSized(R).WriteSized(S);
                return;
        }
    }

    public byte[] ToBytes()
    {
        var w = new TpmWriter();
        Write(w);
        return w.ToArray();
    }

    public static TpmtSignature Read(ref TpmReader r)
    {
        int at = r.Offset;
        var alg = (TpmAlgId)r.ReadUInt16("TPMT_SIGNATURE.sigAlg");
        switch (alg)
        {
            case TpmAlgId.Null:
                return new TpmtSignature(alg, TpmAlgId.Null, [], [], []);
            case TpmAlgId.RsaSsa or TpmAlgId.RsaPss:
                return RsaSignature(alg, (TpmAlgId)r.ReadUInt16("TPMS_SIGNATURE_RSA.hash"),
                    r.ReadSized("TPMS_SIGNATURE_RSA.sig", TpmtPublic.MaxRsaKeyBytes));
            case TpmAlgId.Hmac:
                var ha = TpmtHa.Read(ref r);
                return new TpmtSignature(alg, ha.HashAlg, ha.Digest, [], []);
            case TpmAlgId.EcDsa or TpmAlgId.EcDaa or TpmAlgId.Sm2 or TpmAlgId.EcSchnorr:
                return EccSignature(alg, (TpmAlgId)r.ReadUInt16("TPMS_SIGNATURE_ECC.hash"),
                    r.ReadSized("TPMS_SIGNATURE_ECC.signatureR", TpmsEccPoint.MaxCoordinate),
                    r.ReadSized("TPMS_SIGNATURE_ECC.signatureS", TpmsEccPoint.MaxCoordinate));
            default:
                throw new TpmFormatException(at, $"a signature scheme in TPMT_SIGNATURE.sigAlg (got 0x{(ushort)alg:x4})");
        }
    }

    /// <summary>Parses a bare TPMT_SIGNATURE (tpm2-tools' quote.sig in its default "tss" format).</summary>
    public static TpmtSignature Parse(ReadOnlySpan<byte> bytes)
    {
        var r = new TpmReader(bytes);
        var s = Read(ref r);
        r.ExpectEnd("TPMT_SIGNATURE");
        return s;
    }
}

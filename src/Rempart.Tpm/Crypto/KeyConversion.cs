using System.Security.Cryptography;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm.Crypto;

/// <summary>TPMT_PUBLIC to and from .NET keys and SubjectPublicKeyInfo PEM.</summary>
public static class KeyConversion
{
    public static ECCurve Curve(TpmEccCurve curve) => curve switch
    {
        TpmEccCurve.NistP256 => ECCurve.NamedCurves.nistP256,
        TpmEccCurve.NistP384 => ECCurve.NamedCurves.nistP384,
        TpmEccCurve.NistP521 => ECCurve.NamedCurves.nistP521,
        _ => throw new NotSupportedException($"ECC curve {curve} is not supported"),
    };

    public static int CoordinateSize(TpmEccCurve curve) => curve switch
    {
        TpmEccCurve.NistP256 => 32,
        TpmEccCurve.NistP384 => 48,
        TpmEccCurve.NistP521 => 66,
        _ => throw new NotSupportedException($"ECC curve {curve} is not supported"),
    };

    public static RSA ToRsa(TpmtPublic pub)
    {
        if (pub.Type != TpmAlgId.Rsa || pub.Parameters is not TpmsRsaParms p || pub.Unique is not TpmBufferId n)
        {
            throw new ArgumentException("not an RSA public area");
        }
        if (n.Buffer.Length * 8 != p.KeyBits)
        {
            throw new ArgumentException($"RSA modulus of {n.Buffer.Length * 8} bits does not match keyBits {p.KeyBits}");
        }
        uint e = p.EffectiveExponent;
        byte[] exp = e <= 0xFFFFFF ? [(byte)(e >> 16), (byte)(e >> 8), (byte)e] : [(byte)(e >> 24), (byte)(e >> 16), (byte)(e >> 8), (byte)e];
        return RSA.Create(new RSAParameters { Modulus = n.Buffer, Exponent = exp.SkipWhile(b => b == 0).ToArray() });
    }

    public static ECParameters ToEcParameters(TpmtPublic pub)
    {
        if (pub.Type != TpmAlgId.Ecc || pub.Parameters is not TpmsEccParms p || pub.Unique is not TpmsEccPoint q)
        {
            throw new ArgumentException("not an ECC public area");
        }
        int size = CoordinateSize(p.CurveId);
        return new ECParameters { Curve = Curve(p.CurveId), Q = new ECPoint { X = Pad(q.X, size), Y = Pad(q.Y, size) } };
    }

    public static ECDsa ToEcdsa(TpmtPublic pub) => ECDsa.Create(ToEcParameters(pub));

    public static ECDiffieHellman ToEcdh(TpmtPublic pub) => ECDiffieHellman.Create(ToEcParameters(pub));

    /// <summary>SubjectPublicKeyInfo DER of an RSA or ECC public area.</summary>
    public static byte[] ToSubjectPublicKeyInfo(TpmtPublic pub)
    {
        if (pub.Type == TpmAlgId.Rsa)
        {
            using var rsa = ToRsa(pub);
            return rsa.ExportSubjectPublicKeyInfo();
        }
        using var ec = ToEcdsa(pub);
        return ec.ExportSubjectPublicKeyInfo();
    }

    public static string ToPem(TpmtPublic pub) => PemEncoding.WriteString("PUBLIC KEY", ToSubjectPublicKeyInfo(pub));

    /// <summary>
    /// Builds a public area for a key known only by its PEM/DER public key (what a verifier
    /// given "ak.pem" has): a restricted signing key with the scheme a TPM AK would carry.
    /// </summary>
    public static TpmtPublic FromSubjectPublicKeyInfo(ReadOnlySpan<byte> spki)
    {
        try
        {
            using var rsa = RSA.Create();
            rsa.ImportSubjectPublicKeyInfo(spki, out _);
            var prm = rsa.ExportParameters(false);
            uint e = 0;
            foreach (byte b in prm.Exponent!)
            {
                e = (e << 8) | b;
            }
            return new TpmtPublic(TpmAlgId.Rsa, TpmAlgId.Sha256, TpmaObject.Sign | TpmaObject.Restricted, [],
                new TpmsRsaParms(TpmtSymDef.Null, new TpmtScheme(TpmAlgId.RsaSsa, TpmAlgId.Sha256), (ushort)(prm.Modulus!.Length * 8), e == 65537 ? 0 : e),
                new TpmBufferId(prm.Modulus));
        }
        catch (CryptographicException)
        {
        }
        using var ec = ECDsa.Create();
        try
        {
            ec.ImportSubjectPublicKeyInfo(spki, out _);
        }
        catch (CryptographicException e)
        {
            throw new FormatException("not an RSA or ECC SubjectPublicKeyInfo: " + e.Message, e);
        }
        var ep = ec.ExportParameters(false);
        var curve = ep.Curve.Oid.FriendlyName switch
        {
            "nistP256" or "ECDSA_P256" => TpmEccCurve.NistP256,
            "nistP384" or "ECDSA_P384" => TpmEccCurve.NistP384,
            "nistP521" or "ECDSA_P521" => TpmEccCurve.NistP521,
            _ => ep.Curve.Oid.Value switch
            {
                "1.2.840.10045.3.1.7" => TpmEccCurve.NistP256,
                "1.3.132.0.34" => TpmEccCurve.NistP384,
                "1.3.132.0.35" => TpmEccCurve.NistP521,
                _ => throw new FormatException($"unsupported ECC curve {ep.Curve.Oid.Value}"),
            },
        };
        var hash = curve == TpmEccCurve.NistP256 ? TpmAlgId.Sha256 : curve == TpmEccCurve.NistP384 ? TpmAlgId.Sha384 : TpmAlgId.Sha512;
        return new TpmtPublic(TpmAlgId.Ecc, TpmAlgId.Sha256, TpmaObject.Sign | TpmaObject.Restricted, [],
            new TpmsEccParms(TpmtSymDef.Null, new TpmtScheme(TpmAlgId.EcDsa, hash), curve, TpmtScheme.Null),
            new TpmsEccPoint(ep.Q.X!, ep.Q.Y!));
    }

    /// <summary>Parses a PEM "PUBLIC KEY" block.</summary>
    public static TpmtPublic FromPem(string pem)
    {
        if (!PemEncoding.TryFind(pem, out var fields) || pem[fields.Label] is not "PUBLIC KEY")
        {
            throw new FormatException("no PEM 'PUBLIC KEY' block found");
        }
        var der = Convert.FromBase64String(pem[fields.Base64Data].ToString());
        return FromSubjectPublicKeyInfo(der);
    }

    /// <summary>Left-pads a big-endian integer to <paramref name="size"/> bytes (TPMs may strip leading zeros).</summary>
    public static byte[] Pad(byte[] value, int size)
    {
        if (value.Length == size)
        {
            return value;
        }
        if (value.Length > size)
        {
            int extra = value.Length - size;
            if (value.AsSpan(0, extra).ContainsAnyExcept((byte)0))
            {
                throw new ArgumentException($"integer of {value.Length} bytes does not fit in {size}");
            }
            return value[extra..];
        }
        var r = new byte[size];
        value.CopyTo(r, size - value.Length);
        return r;
    }
}

using System.Numerics;
using System.Security.Cryptography;
using System.Text;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm.Crypto;

/// <summary>
/// Sending a secret seed to a TPM key, as StartAuthSession salts, MakeCredential and
/// duplication do (Part 1, §11.4.9 "Secret Sharing"; Annex B.10.3 for RSA, Annex C.6 for ECC).
/// </summary>
public static class SecretSharing
{
    /// <summary>
    /// Produces a fresh seed of <paramref name="seedBytes"/> (the key's nameAlg digest size
    /// for credentials and duplication) and its encryption to <paramref name="key"/>:
    /// RSA-OAEP with the key's nameAlg and the label with a terminating zero, or an
    /// ephemeral ECDH whose x-coordinate Z goes through KDFe(nameAlg, Z, label, ephemeral.x, key.x).
    /// </summary>
    public static (byte[] Seed, byte[] EncryptedSeed) Encrypt(TpmtPublic key, string label, int seedBytes)
    {
        if (key.Type == TpmAlgId.Rsa)
        {
            var seed = RandomNumberGenerator.GetBytes(seedBytes);
            return (seed, RsaOaepEncrypt(key, seed, label));
        }
        if (key.Type == TpmAlgId.Ecc)
        {
            var p = (TpmsEccParms)key.Parameters;
            var q = (TpmsEccPoint)key.Unique;
            int size = KeyConversion.CoordinateSize(p.CurveId);
            using var peer = KeyConversion.ToEcdh(key);
            using var eph = ECDiffieHellman.Create(KeyConversion.Curve(p.CurveId));
            var ephParams = eph.ExportParameters(false);
            var z = eph.DeriveRawSecretAgreement(peer.PublicKey);
            try
            {
                var seed = Kdf.KdfE(key.NameAlg, z, label, ephParams.Q.X!, KeyConversion.Pad(q.X, size), TpmHash.DigestSize(key.NameAlg) * 8);
                var w = new TpmWriter();
                w.WriteSized(ephParams.Q.X!).WriteSized(ephParams.Q.Y!);
                return (seed, w.ToArray());
            }
            finally
            {
                CryptographicOperations.ZeroMemory(z);
            }
        }
        throw new ArgumentException($"cannot share a secret with a {key.Type} key");
    }

    /// <summary>
    /// RSAES-OAEP (RFC 8017 §7.1.1) with a label: .NET's RSA does not take OAEP labels, so
    /// EME-OAEP encoding is done here, and the public-key operation by OpenSSL without padding
    /// (<see cref="OpenSslRsa"/>), or with BigInteger where OpenSSL cannot be called directly. Only
    /// the public exponent is used; no private key material is involved.
    /// </summary>
    public static byte[] RsaOaepEncrypt(TpmtPublic key, ReadOnlySpan<byte> message, string label)
    {
        var n = ((TpmBufferId)key.Unique).Buffer;
        uint e = ((TpmsRsaParms)key.Parameters).EffectiveExponent;
        var em = OaepEncode(key.NameAlg, n.Length, message, label);
        try
        {
            return OperatingSystem.IsLinux() && OpenSslRsa.Unavailable is null
                ? OpenSslRsa.PublicOperation(n, e, em)
                : RsaepBigInteger(n, e, em);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(em);
        }
    }

    /// <summary>
    /// EME-OAEP encoding (RFC 8017 §7.1.1 step 2) of <paramref name="message"/> for a modulus of
    /// <paramref name="k"/> bytes, with <paramref name="hashAlg"/> for the label hash and MGF1, the label
    /// being <paramref name="label"/> in ASCII and a terminating zero byte (Part 1, Annex B.4). A
    /// fresh random seed each call. The result reveals the message: a pinned array the caller wipes.
    /// </summary>
    internal static byte[] OaepEncode(TpmAlgId hashAlg, int k, ReadOnlySpan<byte> message, string label)
    {
        int hLen = TpmHash.DigestSize(hashAlg);
        if (message.Length > k - (2 * hLen) - 2)
        {
            throw new ArgumentException("message too long for RSA-OAEP with this key");
        }
        byte[] labelBytes = [.. Encoding.ASCII.GetBytes(label), 0];
        var lHash = TpmHash.Hash(hashAlg, labelBytes);
        var db = new byte[k - hLen - 1];
        lHash.CopyTo(db, 0);
        db[db.Length - message.Length - 1] = 0x01;
        message.CopyTo(db.AsSpan(db.Length - message.Length));
        var seed = RandomNumberGenerator.GetBytes(hLen);
        var dbMask = Mgf1(hashAlg, seed, db.Length);
        for (int i = 0; i < db.Length; i++)
        {
            db[i] ^= dbMask[i];
        }
        var seedMask = Mgf1(hashAlg, db, hLen);
        for (int i = 0; i < hLen; i++)
        {
            seed[i] ^= seedMask[i];
        }
        var em = GC.AllocateArray<byte>(k, pinned: true);
        seed.CopyTo(em, 1);
        db.CopyTo(em, 1 + hLen);
        CryptographicOperations.ZeroMemory(db);
        CryptographicOperations.ZeroMemory(dbMask);
        return em;
    }

    /// <summary>RSAEP (RFC 8017 §5.1.1) in BigInteger: <paramref name="em"/>^e mod n, as many bytes as n.</summary>
    internal static byte[] RsaepBigInteger(byte[] n, uint e, byte[] em)
    {
        var m = new BigInteger(em, isUnsigned: true, isBigEndian: true);
        var modulus = new BigInteger(n, isUnsigned: true, isBigEndian: true);
        var c = BigInteger.ModPow(m, e, modulus);
        return KeyConversion.Pad(c.ToByteArray(isUnsigned: true, isBigEndian: true), n.Length);
    }

    /// <summary>
    /// MGF1 (RFC 8017 §B.2.1), the mask generation function of OAEP: the concatenation of
    /// H(seed ‖ counter) for a 32-bit big-endian counter from 0, truncated to <paramref name="length"/>.
    /// Public so that the other side of OAEP (a TPM played in software) reuses this one.
    /// </summary>
    public static byte[] Mgf1(TpmAlgId hash, ReadOnlySpan<byte> seed, int length)
    {
        var output = new byte[length];
        var block = new byte[seed.Length + 4];
        seed.CopyTo(block);
        int done = 0;
        for (uint counter = 0; done < length; counter++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(block.AsSpan(seed.Length), counter);
            var h = TpmHash.Hash(hash, block);
            int n = Math.Min(h.Length, length - done);
            h.AsSpan(0, n).CopyTo(output.AsSpan(done));
            done += n;
        }
        return output;
    }
}

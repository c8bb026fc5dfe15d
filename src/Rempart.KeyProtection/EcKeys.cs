using System.Globalization;
using System.Numerics;
using System.Security.Cryptography;

namespace Rempart.KeyProtection;

/// <summary>NIST P-384 public keys as SubjectPublicKeyInfo (RFC 5480), and P-256 for ES256.</summary>
internal static class EcKeys
{
    public const string P384Oid = "1.3.132.0.34";
    public const string P256Oid = "1.2.840.10045.3.1.7";

    /// <summary>SPKI of an uncompressed P-384 point: the 23-byte DER prefix, 0x04, X (48), Y (48).</summary>
    public const int P384SpkiLength = 120;

    /// <summary>SPKI of an uncompressed P-256 point.</summary>
    public const int P256SpkiLength = 91;

    /// <summary>
    /// SEQUENCE { SEQUENCE { id-ecPublicKey, secp384r1 }, BIT STRING (0 unused bits) 0x04 ... }: the one
    /// DER encoding of a P-384 SPKI with an uncompressed point (RFC 5480 §2).
    /// </summary>
    private static readonly byte[] P384SpkiPrefix = Convert.FromHexString("3076301006072a8648ce3d020106052b8104002203620004");

    // FIPS 186-5 / SP 800-186 §3.2.1.4 (P-384): y^2 = x^3 - 3x + b over GF(p), cofactor 1.
    private static readonly BigInteger P = BigInteger.Pow(2, 384) - BigInteger.Pow(2, 128) - BigInteger.Pow(2, 96) + BigInteger.Pow(2, 32) - 1;
    private static readonly BigInteger B = BigInteger.Parse("0b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef", NumberStyles.HexNumber, CultureInfo.InvariantCulture);

    /// <summary>
    /// Whether <paramref name="spki"/> is a P-384 public key in its canonical encoding whose point lies on
    /// the curve. Exact and cheap (no key import): with cofactor 1, every such point is a valid public key
    /// (SP 800-56A §5.6.2.3.3 full validation: coordinates in [0, p-1], on the curve, not infinity — which
    /// has no uncompressed encoding).
    /// </summary>
    public static bool IsP384(ReadOnlySpan<byte> spki)
    {
        if (spki.Length != P384SpkiLength || !spki[..P384SpkiPrefix.Length].SequenceEqual(P384SpkiPrefix))
        {
            return false;
        }
        var x = new BigInteger(spki.Slice(P384SpkiPrefix.Length, 48), isUnsigned: true, isBigEndian: true);
        var y = new BigInteger(spki.Slice(P384SpkiPrefix.Length + 48, 48), isUnsigned: true, isBigEndian: true);
        if (x >= P || y >= P)
        {
            return false;
        }
        var rhs = (BigInteger.ModPow(x, 3, P) - (3 * x) + B) % P;
        if (rhs.Sign < 0)
        {
            rhs += P;
        }
        return BigInteger.ModPow(y, 2, P) == rhs;
    }

    /// <summary>Imports a P-384 key-agreement public key that <see cref="IsP384"/> accepts; null otherwise.</summary>
    public static ECDiffieHellman? TryImportP384(ReadOnlySpan<byte> spki)
    {
        if (!IsP384(spki))
        {
            return null;
        }
        var key = ECDiffieHellman.Create();
        try
        {
            key.ImportSubjectPublicKeyInfo(spki, out int read);
            if (read == spki.Length)
            {
                return key;
            }
        }
        catch (Exception e) when (IsImportFailure(e))
        {
        }
        key.Dispose();
        return null;
    }

    /// <summary>
    /// Imports a P-256 ECDSA public key: the curve is checked, the import validates the point, and the
    /// encoding must be the canonical one (uncompressed, DER, no trailing bytes). Null when any of that fails.
    /// </summary>
    public static ECDsa? TryImportP256(ReadOnlySpan<byte> spki)
    {
        var key = ECDsa.Create();
        try
        {
            key.ImportSubjectPublicKeyInfo(spki, out int read);
            var curve = key.ExportParameters(false).Curve;
            if (read == spki.Length && curve.IsNamed && (curve.Oid.Value == P256Oid || curve.Oid.FriendlyName is "nistP256" or "secp256r1" or "ECDSA_P256")
                && key.ExportSubjectPublicKeyInfo().AsSpan().SequenceEqual(spki))
            {
                return key;
            }
        }
        catch (Exception e) when (IsImportFailure(e))
        {
        }
        key.Dispose();
        return null;
    }

    /// <summary>What a key import throws for bytes that are not a usable key (an unknown curve OID is PlatformNotSupportedException).</summary>
    private static bool IsImportFailure(Exception e) =>
        e is CryptographicException or PlatformNotSupportedException or ArgumentException or System.Formats.Asn1.AsnContentException;
}

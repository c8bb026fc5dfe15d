using System.Security.Cryptography;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm.Crypto;

/// <summary>Checks a TPMT_SIGNATURE over a message with a TPM public key (RSASSA, RSAPSS, ECDSA).</summary>
public static class SignatureVerifier
{
    /// <summary>
    /// True when <paramref name="sig"/> is a valid signature of <paramref name="message"/> by
    /// <paramref name="key"/>. A key with a fixed scheme only accepts that scheme and hash.
    /// Returns false (never throws) for a mismatched, unsupported or malformed signature.
    /// </summary>
    public static bool Verify(TpmtPublic key, ReadOnlySpan<byte> message, TpmtSignature sig, out string reason)
    {
        VerificationKey vk;
        try
        {
            vk = new VerificationKey(key);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException or NotSupportedException or InvalidCastException)
        {
            reason = "key unusable: " + e.Message;
            return false;
        }
        using (vk)
        {
            return Verify(vk, message, sig, out reason);
        }
    }

    /// <summary>As <see cref="Verify(TpmtPublic, ReadOnlySpan{byte}, TpmtSignature, out string)"/> with a key imported once.</summary>
    public static bool Verify(VerificationKey vk, ReadOnlySpan<byte> message, TpmtSignature sig, out string reason)
    {
        var key = vk.Public;
        var keyScheme = key.Parameters switch
        {
            TpmsRsaParms r => r.Scheme,
            TpmsEccParms e => e.Scheme,
            _ => null,
        };
        if (keyScheme is null)
        {
            reason = $"a {key.Type} key does not sign";
            return false;
        }
        if (keyScheme.Scheme != TpmAlgId.Null && (keyScheme.Scheme != sig.SigAlg || keyScheme.HashAlg != sig.Hash))
        {
            reason = $"signature scheme {sig.SigAlg}/{sig.Hash} differs from the key's {keyScheme.Scheme}/{keyScheme.HashAlg}";
            return false;
        }
        if (!TpmHash.Computable(sig.Hash))
        {
            reason = $"signature hash {sig.Hash} is not supported";
            return false;
        }
        var hash = TpmHash.Name(sig.Hash);
        try
        {
            switch (sig.SigAlg)
            {
                case TpmAlgId.RsaSsa when vk.Rsa is { } rsa:
                    reason = "RSASSA signature does not verify";
                    return rsa.VerifyData(message, sig.Rsa, hash, RSASignaturePadding.Pkcs1);
                case TpmAlgId.RsaPss when vk.Rsa is { } rsa:
                    reason = "RSAPSS signature does not verify";
                    return rsa.VerifyData(message, sig.Rsa, hash, RSASignaturePadding.Pss);
                case TpmAlgId.EcDsa when vk.Ecdsa is { } ec:
                {
                    int size = vk.CoordinateSize;
                    if (sig.R.Length > size || sig.S.Length > size)
                    {
                        reason = "ECDSA signature values are larger than the curve";
                        return false;
                    }
                    byte[] rs = [.. KeyConversion.Pad(sig.R, size), .. KeyConversion.Pad(sig.S, size)];
                    reason = "ECDSA signature does not verify";
                    return ec.VerifyData(message, rs, hash, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
                }
                default:
                    reason = $"signature algorithm {sig.SigAlg} cannot be checked with a {key.Type} key";
                    return false;
            }
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException or NotSupportedException)
        {
            reason = "signature or key unusable: " + e.Message;
            return false;
        }
    }
}

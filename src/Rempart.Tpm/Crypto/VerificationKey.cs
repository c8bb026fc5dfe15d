using System.Security.Cryptography;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm.Crypto;

/// <summary>
/// A TPM signing key's public area together with its imported .NET key, so a verifier that
/// checks many quotes from one AK (the Guardian) pays the key import once. Importing costs
/// several times one signature verification (see bench/README.md).
/// </summary>
public sealed class VerificationKey : IDisposable
{
    public VerificationKey(TpmtPublic pub)
    {
        Public = pub;
        if (pub.Type == TpmAlgId.Rsa)
        {
            Rsa = KeyConversion.ToRsa(pub);
        }
        else if (pub.Type == TpmAlgId.Ecc)
        {
            Ecdsa = KeyConversion.ToEcdsa(pub);
            CoordinateSize = KeyConversion.CoordinateSize(((TpmsEccParms)pub.Parameters).CurveId);
        }
        else
        {
            throw new ArgumentException($"a {pub.Type} key does not sign");
        }
    }

    public TpmtPublic Public { get; }

    internal RSA? Rsa { get; }

    internal ECDsa? Ecdsa { get; }

    internal int CoordinateSize { get; }

    public void Dispose()
    {
        Rsa?.Dispose();
        Ecdsa?.Dispose();
    }
}

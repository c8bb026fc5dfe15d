using System.Security.Cryptography;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm.Crypto;

/// <summary>
/// MakeCredential done by a verifier without a TPM (Part 1, §24 "Credential Protection";
/// Part 3, §12.6): a credential only the TPM holding <c>ekPublic</c>'s private key can
/// recover, and only for an object loaded there with Name <c>objectName</c>.
/// </summary>
public static class Credential
{
    /// <summary>
    /// seed → encrypted to the EK (label "IDENTITY"); symKey = KDFa(nameAlg, seed, "STORAGE",
    /// objectName, "", symBits); encIdentity = AES-CFB(symKey, iv=0, TPM2B(credential));
    /// HMACkey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digestBits);
    /// integrity = HMAC(HMACkey, encIdentity || objectName); blob = TPM2B(integrity) || encIdentity.
    /// </summary>
    public static (Tpm2bIdObject Blob, Tpm2bEncryptedSecret Secret) Make(TpmtPublic ekPublic, ReadOnlySpan<byte> credential, ReadOnlySpan<byte> objectName)
    {
        if (credential.Length > TpmHash.DigestSize(ekPublic.NameAlg))
        {
            throw new ArgumentException("a credential is at most one digest of the EK's nameAlg");
        }
        var symDef = ekPublic.Parameters switch
        {
            TpmsRsaParms r => r.Symmetric,
            TpmsEccParms e => e.Symmetric,
            _ => throw new ArgumentException("the EK must be an RSA or ECC storage key"),
        };
        if (symDef.Algorithm != TpmAlgId.Aes || symDef.Mode != TpmAlgId.Cfb)
        {
            throw new ArgumentException("the EK's symmetric algorithm must be AES-CFB");
        }
        var hash = ekPublic.NameAlg;
        var (seed, encSeed) = SecretSharing.Encrypt(ekPublic, "IDENTITY", TpmHash.DigestSize(hash));
        var symKey = Kdf.KdfA(hash, seed, "STORAGE", objectName, [], symDef.KeyBits);
        var hmacKey = Kdf.KdfA(hash, seed, "INTEGRITY", [], [], TpmHash.DigestSize(hash) * 8);
        try
        {
            var w = new TpmWriter();
            w.WriteSized(credential);
            var encIdentity = w.ToArray();
            w.Clear();
            AesCfb.Encrypt(symKey, new byte[16], encIdentity);
            var integrity = TpmHash.Hmac(hash, hmacKey, [.. encIdentity, .. objectName]);
            var blob = new TpmWriter();
            blob.WriteSized(integrity).WriteBytes(encIdentity);
            return (new Tpm2bIdObject(blob.ToArray()), new Tpm2bEncryptedSecret(encSeed));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(seed);
            CryptographicOperations.ZeroMemory(symKey);
            CryptographicOperations.ZeroMemory(hmacKey);
        }
    }
}

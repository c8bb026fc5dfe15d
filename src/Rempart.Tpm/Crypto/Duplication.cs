using System.Security.Cryptography;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm.Crypto;

/// <summary>
/// Creating, without a TPM, an object that a TPM can take in with TPM2_Import: the "outer
/// duplication wrapper" of Part 1 §23.3.2 (no inner wrapper). Only the TPM that holds
/// <c>newParent</c>'s private key can import it, and the object's authPolicy then governs
/// every use. This is how a secret is sent to one TPM without the sender ever holding a
/// key of that TPM's.
/// </summary>
public static class Duplication
{
    /// <summary>
    /// A sealed data object (KEYEDHASH, no scheme) holding <paramref name="data"/>, whose
    /// only authorisation is <paramref name="authPolicy"/> (userWithAuth clear), wrapped for
    /// import under <paramref name="newParent"/> (an RSA or ECC storage key with AES-CFB).
    /// </summary>
    public static ImportBlob SealForImport(TpmtPublic newParent, ReadOnlySpan<byte> data, byte[] authPolicy, TpmAlgId nameAlg = TpmAlgId.Sha256)
    {
        if (data.Length > 128)
        {
            throw new ArgumentException("sealed data is at most 128 bytes (MAX_SYM_DATA)");
        }
        var seedValue = RandomNumberGenerator.GetBytes(TpmHash.DigestSize(nameAlg));
        var unique = TpmHash.Hash(nameAlg, [.. seedValue, .. data]);
        // fixedTPM and fixedParent must be clear on an object that is imported (Part 3, §13.3.1).
        var pub = new TpmtPublic(TpmAlgId.KeyedHash, nameAlg, TpmaObject.NoDa, authPolicy,
            new TpmsKeyedHashParms(TpmtScheme.Null), new TpmBufferId(unique));
        // TPM2B_SENSITIVE: size, then TPMT_SENSITIVE (Part 2, §12.3.2.4).
        var sensitive = new TpmWriter();
        sensitive.WriteUInt16((ushort)(2 + 2 + 2 + seedValue.Length + 2 + data.Length));
        sensitive.WriteUInt16((ushort)TpmAlgId.KeyedHash); // sensitiveType
        sensitive.WriteSized([]);                           // authValue
        sensitive.WriteSized(seedValue);                    // seedValue
        sensitive.WriteSized(data);                         // TPM2B_SENSITIVE_DATA
        var sensitiveBytes = sensitive.ToArray();
        sensitive.Clear();
        try
        {
            return Wrap(newParent, pub, sensitiveBytes);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(sensitiveBytes);
            CryptographicOperations.ZeroMemory(seedValue);
        }
    }

    /// <summary>
    /// The outer wrapper (Part 1 §23.3.2.3): seed shared with the new parent (label
    /// "DUPLICATE"); symKey = KDFa(parent.nameAlg, seed, "STORAGE", Name, "", parent symmetric
    /// bits); encSensitive = AES-CFB(symKey, IV 0, TPM2B_SENSITIVE); HMACkey = KDFa(parent.nameAlg,
    /// seed, "INTEGRITY", "", "", digest bits); duplicate = TPM2B(HMAC(HMACkey, encSensitive ‖
    /// Name)) ‖ encSensitive.
    /// </summary>
    private static ImportBlob Wrap(TpmtPublic newParent, TpmtPublic objectPublic, byte[] sizedSensitive)
    {
        var sym = newParent.Parameters switch
        {
            TpmsRsaParms r => r.Symmetric,
            TpmsEccParms e => e.Symmetric,
            _ => throw new ArgumentException("the new parent must be an RSA or ECC storage key"),
        };
        if (sym.Algorithm != TpmAlgId.Aes || sym.Mode != TpmAlgId.Cfb || !newParent.Has(TpmaObject.Restricted | TpmaObject.Decrypt))
        {
            throw new ArgumentException("the new parent must be a restricted decryption (storage) key with AES-CFB");
        }
        var hash = newParent.NameAlg;
        var name = objectPublic.Name();
        var (seed, encSeed) = SecretSharing.Encrypt(newParent, "DUPLICATE", TpmHash.DigestSize(hash));
        var symKey = Kdf.KdfA(hash, seed, "STORAGE", name, [], sym.KeyBits);
        var hmacKey = Kdf.KdfA(hash, seed, "INTEGRITY", [], [], TpmHash.DigestSize(hash) * 8);
        try
        {
            var enc = (byte[])sizedSensitive.Clone();
            AesCfb.Encrypt(symKey, new byte[16], enc);
            var outerHmac = TpmHash.Hmac(hash, hmacKey, [.. enc, .. name]);
            var dup = new TpmWriter();
            dup.WriteSized(outerHmac).WriteBytes(enc);
            return new ImportBlob(objectPublic, dup.ToArray(), encSeed);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(seed);
            CryptographicOperations.ZeroMemory(symKey);
            CryptographicOperations.ZeroMemory(hmacKey);
        }
    }
}

/// <summary>What TPM2_Import takes: the object's public area, its duplicate (TPM2B_PRIVATE contents) and the encrypted seed.</summary>
public sealed record ImportBlob(TpmtPublic Public, byte[] Duplicate, byte[] EncryptedSeed);

using System.Security.Cryptography;

namespace Rempart.Tpm;

/// <summary>Hash algorithms the TPM names by TPM_ALG_ID, mapped to .NET.</summary>
public static class TpmHash
{
    public static bool IsHash(TpmAlgId alg) =>
        alg is TpmAlgId.Sha1 or TpmAlgId.Sha256 or TpmAlgId.Sha384 or TpmAlgId.Sha512 or TpmAlgId.Sm3_256;

    /// <summary>Digest size in bytes, or 0 for an algorithm that is not a hash.</summary>
    public static int DigestSize(TpmAlgId alg) => alg switch
    {
        TpmAlgId.Sha1 => 20,
        TpmAlgId.Sha256 => 32,
        TpmAlgId.Sha384 => 48,
        TpmAlgId.Sha512 => 64,
        TpmAlgId.Sm3_256 => 32,
        _ => 0,
    };

    /// <summary>The .NET name of a hash algorithm .NET can compute (SM3 it cannot).</summary>
    public static HashAlgorithmName Name(TpmAlgId alg) => alg switch
    {
        TpmAlgId.Sha1 => HashAlgorithmName.SHA1,
        TpmAlgId.Sha256 => HashAlgorithmName.SHA256,
        TpmAlgId.Sha384 => HashAlgorithmName.SHA384,
        TpmAlgId.Sha512 => HashAlgorithmName.SHA512,
        _ => throw new NotSupportedException($"hash algorithm {alg} is not available in .NET"),
    };

    public static bool Computable(TpmAlgId alg) =>
        alg is TpmAlgId.Sha1 or TpmAlgId.Sha256 or TpmAlgId.Sha384 or TpmAlgId.Sha512;

    public static byte[] Hash(TpmAlgId alg, ReadOnlySpan<byte> data) => CryptographicOperations.HashData(Name(alg), data);

    public static byte[] Hmac(TpmAlgId alg, ReadOnlySpan<byte> key, ReadOnlySpan<byte> data) =>
        CryptographicOperations.HmacData(Name(alg), key, data);

    /// <summary>Lower-case name as tpm2-tools and the TCG logs spell it (sha1, sha256, …).</summary>
    public static string ToName(TpmAlgId alg) => alg switch
    {
        TpmAlgId.Sha1 => "sha1",
        TpmAlgId.Sha256 => "sha256",
        TpmAlgId.Sha384 => "sha384",
        TpmAlgId.Sha512 => "sha512",
        TpmAlgId.Sm3_256 => "sm3_256",
        _ => alg.ToString().ToLowerInvariant(),
    };

    public static bool TryParse(string name, out TpmAlgId alg)
    {
        alg = name.ToLowerInvariant() switch
        {
            "sha1" => TpmAlgId.Sha1,
            "sha256" => TpmAlgId.Sha256,
            "sha384" => TpmAlgId.Sha384,
            "sha512" => TpmAlgId.Sha512,
            "sm3_256" or "sm3" => TpmAlgId.Sm3_256,
            _ => TpmAlgId.Error,
        };
        return alg != TpmAlgId.Error;
    }
}

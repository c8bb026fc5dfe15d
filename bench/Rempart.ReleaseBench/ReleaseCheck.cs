using System.Numerics;
using System.Security.Cryptography;
using System.Text;
using Rempart.Attestation.Protocol;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;

namespace Rempart.ReleaseBench;

/// <summary>
/// Opens a released key as the host's TPM would (TPM2_RSA_Decrypt, OAEP-SHA256, label
/// "rempart/release/v1/&lt;releaseId&gt;\0", docs/key-release.md) but with the software binding key,
/// so the benchmark can show that what it counted really is the VM's key, wrapped for that host.
/// </summary>
public static class ReleaseCheck
{
    /// <summary>Null when the answer is right (names this VM and binding key, and decrypts to the VM master key of <paramref name="vm"/>), else what is wrong.</summary>
    public static string? Problem(ReleaseResponse answer, ReleaseHost host, VmKey vm)
    {
        ArgumentNullException.ThrowIfNull(answer);
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(vm);
        if (answer.VmId != vm.VmId || answer.HostId != host.HostId)
        {
            return $"answer for {answer.VmId} on {answer.HostId}, asked {vm.VmId} on {host.HostId}";
        }
        if (answer.Scheme != ReleaseWrap.Scheme || answer.BindingKey != Convert.ToHexStringLower(host.Tpm.BindingKeyName))
        {
            return $"scheme {answer.Scheme}, binding key {answer.BindingKey}: not this host's binding key";
        }
        byte[] key;
        try
        {
            key = OaepDecrypt(host.BindingKey, Convert.FromBase64String(answer.WrappedKey), ReleaseWrap.Label(answer.ReleaseId));
        }
        catch (Exception e) when (e is CryptographicException or FormatException or ArgumentException)
        {
            return "the wrapped key does not open with the binding key: " + e.Message;
        }
        bool same = CryptographicOperations.FixedTimeEquals(key, vm.Vmk);
        CryptographicOperations.ZeroMemory(key);
        return same ? null : "the wrapped key opens to another key than the VM master key";
    }

    /// <summary>RSAES-OAEP decryption (RFC 8017 §7.1.2), SHA-256 and MGF1-SHA-256, with a label and its terminating zero.</summary>
    public static byte[] OaepDecrypt(RSA key, ReadOnlySpan<byte> ciphertext, string label)
    {
        ArgumentNullException.ThrowIfNull(key);
        var p = key.ExportParameters(true);
        const int hLen = 32;
        int k = p.Modulus!.Length;
        var n = Unsigned(p.Modulus);
        var c = Unsigned(ciphertext);
        if (ciphertext.Length != k || c >= n)
        {
            throw new CryptographicException("the ciphertext is not one modulus long");
        }
        var m = BigInteger.ModPow(c, Unsigned(p.D!), n);
        var em = new byte[k];
        m.TryWriteBytes(em.AsSpan(k - m.GetByteCount(isUnsigned: true)), out _, isUnsigned: true, isBigEndian: true);
        var maskedSeed = em.AsSpan(1, hLen);
        var maskedDb = em.AsSpan(1 + hLen);
        var seedMask = SecretSharing.Mgf1(TpmAlgId.Sha256, maskedDb, hLen);
        for (int i = 0; i < hLen; i++)
        {
            maskedSeed[i] ^= seedMask[i];
        }
        var dbMask = SecretSharing.Mgf1(TpmAlgId.Sha256, maskedSeed, maskedDb.Length);
        for (int i = 0; i < maskedDb.Length; i++)
        {
            maskedDb[i] ^= dbMask[i];
        }
        var lHash = SHA256.HashData([.. Encoding.ASCII.GetBytes(label), 0]);
        int one = maskedDb[hLen..].IndexOfAnyExcept((byte)0);
        if (em[0] != 0 || !CryptographicOperations.FixedTimeEquals(maskedDb[..hLen], lHash) || one < 0 || maskedDb[hLen + one] != 1)
        {
            throw new CryptographicException("OAEP decoding failed (wrong key or label)");
        }
        var result = maskedDb[(hLen + one + 1)..].ToArray();
        CryptographicOperations.ZeroMemory(em);
        CryptographicOperations.ZeroMemory(p.D);
        CryptographicOperations.ZeroMemory(p.P);
        CryptographicOperations.ZeroMemory(p.Q);
        CryptographicOperations.ZeroMemory(p.DP);
        CryptographicOperations.ZeroMemory(p.DQ);
        CryptographicOperations.ZeroMemory(p.InverseQ);
        return result;
    }

    private static BigInteger Unsigned(ReadOnlySpan<byte> bigEndian) => new(bigEndian, isUnsigned: true, isBigEndian: true);
}

using System.Buffers.Text;
using System.Formats.Asn1;
using System.Security.Cryptography;
using Rempart.Guardian.Keys;
using Rempart.KeyProtection;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Guardian.Tests.Keys;

/// <summary>Checks of a provider's results by code that is not the provider's: .NET's own ECDH and ECDSA, and openssl.</summary>
public static class KeyChecks
{
    /// <summary>Z from the provider equals Z computed on the peer's side with .NET's ECDiffieHellman.</summary>
    public static byte[] EcdhMatchesPeer(IGuardianKeyOperations ops, GuardianKeyInfo key)
    {
        using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        var z = ops.DeriveSharedSecret(key.Kid, peer.ExportSubjectPublicKeyInfo());
        using var guardian = ECDiffieHellman.Create();
        guardian.ImportSubjectPublicKeyInfo(key.SubjectPublicKeyInfo, out _);
        Assert.Equal(48, z.Length);
        Assert.Equal(peer.DeriveRawSecretAgreement(guardian.PublicKey), z);
        return z;
    }

    /// <summary>The kid rule, computed here: base64url(SHA-256(SPKI)), 22 characters.</summary>
    public static void KidFollowsTheRule(string kid, byte[] spki) =>
        Assert.Equal(Base64Url.EncodeToString(SHA256.HashData(spki))[..22], kid);

    /// <summary>An ES256 signature that .NET and `openssl dgst -sha256 -verify` accept, and refuse for other data.</summary>
    public static void SignatureVerifies(IGuardianKeyProvider provider)
    {
        var data = RandomNumberGenerator.GetBytes(333);
        var sig = provider.SignEs256(data);
        Assert.Equal(64, sig.Length);
        using (var pub = ECDsa.Create())
        {
            pub.ImportSubjectPublicKeyInfo(provider.SigningPublicKey, out _);
            Assert.Equal(256, pub.KeySize);
            Assert.True(pub.VerifyData(data, sig, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation));
            data[0] ^= 1;
            Assert.False(pub.VerifyData(data, sig, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation));
            data[0] ^= 1;
        }

        var dir = Directory.CreateTempSubdirectory("rempart-sig-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "pub.pem"), PemEncoding.WriteString("PUBLIC KEY", provider.SigningPublicKey));
            File.WriteAllBytes(Path.Combine(dir, "data"), data);
            File.WriteAllBytes(Path.Combine(dir, "sig.der"), Der(sig));
            var ok = Tool.Run("openssl", ["dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", "data"], cwd: dir);
            Assert.True(ok.ExitCode == 0 && ok.Stdout.Contains("Verified OK", StringComparison.Ordinal), ok.Stdout + ok.Stderr);
            data[^1] ^= 1;
            File.WriteAllBytes(Path.Combine(dir, "data"), data);
            Assert.NotEqual(0, Tool.Run("openssl", ["dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", "data"], cwd: dir).ExitCode);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>r || s as the DER ECDSA-Sig-Value openssl reads (RFC 3279 §2.2.3).</summary>
    private static byte[] Der(byte[] p1363)
    {
        var w = new AsnWriter(AsnEncodingRules.DER);
        using (w.PushSequence())
        {
            w.WriteIntegerUnsigned(Minimal(p1363.AsSpan(0, 32)));
            w.WriteIntegerUnsigned(Minimal(p1363.AsSpan(32)));
        }
        return w.Encode();
    }

    /// <summary>DER integers have no redundant leading zero bytes (r or s starts with 0x00 once in 256 signatures).</summary>
    private static ReadOnlySpan<byte> Minimal(ReadOnlySpan<byte> value)
    {
        int i = 0;
        while (i < value.Length - 1 && value[i] == 0)
        {
            i++;
        }
        return value[i..];
    }

    /// <summary>Asserts <paramref name="action"/> throws a KeyProviderException with <paramref name="id"/>.</summary>
    public static KeyProviderException Throws(string id, Action action)
    {
        var e = Assert.Throws<KeyProviderException>(action);
        Assert.True(e.Id == id, $"expected {id}, got {e.Id}: {e.Message}");
        return e;
    }
}

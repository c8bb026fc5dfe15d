using System.Collections.Concurrent;
using System.Globalization;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using System.Security.Cryptography;

namespace Rempart.Tpm.Crypto;

/// <summary>
/// The RSA public-key operation alone, RSAEP of RFC 8017 §5.1.1 (c = m^e mod n, no padding), through
/// libcrypto.so.3 — the OpenSSL .NET's own crypto has loaded — for EME-OAEP with a label, which .NET's
/// RSA does not take (<see cref="SecretSharing.RsaOaepEncrypt"/> encodes, this exponentiates):
/// <c>EVP_PKEY_encrypt</c> with <c>RSA_NO_PADDING</c> on the key .NET imported. Several times faster
/// than <see cref="BigInteger.ModPow(BigInteger, BigInteger, BigInteger)"/>; public key only, but the
/// input (the encoded message) is secret: it goes in from an array the caller wipes.
/// <para>
/// Importing the key costs several times the operation (RSAOpenSsl's import, then OpenSSL's first use
/// of a new key: ~250 µs against ~30 µs for RSA-2048, e = 65537), and the same few keys come back —
/// a host's binding key at each of its releases — so the imported keys are kept, by their exact
/// modulus and exponent (a hit is the key those numbers are), at most <see cref="CacheCapacity"/>,
/// all dropped when full. Public data only.
/// </para>
/// </summary>
[SupportedOSPlatform("linux")]
internal static class OpenSslRsa
{
    private const string LibCrypto = OpenSslLibrary.Name;
    private const int RsaNoPadding = 3; // RSA_NO_PADDING, openssl/rsa.h

    private static readonly string[] Symbols =
        ["EVP_PKEY_CTX_new", "EVP_PKEY_encrypt_init", "EVP_PKEY_CTX_set_rsa_padding", "EVP_PKEY_encrypt", "EVP_PKEY_CTX_free"];

    private const int CacheCapacity = 256;

    private static readonly Lazy<string?> Problem = new(Probe, LazyThreadSafetyMode.ExecutionAndPublication);
    private static readonly ConcurrentDictionary<string, SafeEvpPKeyHandle> Keys = new(StringComparer.Ordinal);

    /// <summary>Why OpenSSL cannot be called directly in this process (null: it can); then the caller uses BigInteger.</summary>
    public static string? Unavailable => Problem.Value;

    /// <summary>
    /// m^e mod n as <paramref name="modulus"/>.Length bytes, big-endian. <paramref name="encoded"/> is
    /// as long as the modulus and, as a number, below it (EME-OAEP's leading zero byte sees to that).
    /// Fails closed: a <see cref="CryptographicException"/> naming the OpenSSL step.
    /// </summary>
    public static byte[] PublicOperation(byte[] modulus, uint exponent, byte[] encoded)
    {
        ArgumentNullException.ThrowIfNull(modulus);
        ArgumentNullException.ThrowIfNull(encoded);
        if (encoded.Length != modulus.Length)
        {
            throw new ArgumentException("the encoded message must be as long as the modulus", nameof(encoded));
        }
        // SafeEvpPKeyHandle arguments are AddRef'ed for each call: a key dropped from the cache meanwhile is freed after it.
        nint ctx = EVP_PKEY_CTX_new(Key(modulus, exponent), 0);
        if (ctx == 0)
        {
            throw Failed("EVP_PKEY_CTX_new");
        }
        try
        {
            if (EVP_PKEY_encrypt_init(ctx) != 1)
            {
                throw Failed("EVP_PKEY_encrypt_init");
            }
            if (EVP_PKEY_CTX_set_rsa_padding(ctx, RsaNoPadding) != 1)
            {
                throw Failed("EVP_PKEY_CTX_set_rsa_padding");
            }
            nuint size = 0;
            if (EVP_PKEY_encrypt(ctx, null, ref size, encoded, (nuint)encoded.Length) != 1 || size != (nuint)modulus.Length)
            {
                throw Failed("EVP_PKEY_encrypt (size)");
            }
            var c = new byte[modulus.Length];
            nuint written = size;
            if (EVP_PKEY_encrypt(ctx, c, ref written, encoded, (nuint)encoded.Length) != 1 || written != size)
            {
                throw Failed("EVP_PKEY_encrypt");
            }
            return c;
        }
        finally
        {
            EVP_PKEY_CTX_free(ctx);
        }
    }

    /// <summary>The imported key (n, e), from the cache or imported now.</summary>
    private static SafeEvpPKeyHandle Key(byte[] modulus, uint exponent)
    {
        var id = string.Create(CultureInfo.InvariantCulture, $"{exponent}:{Convert.ToBase64String(modulus)}");
        if (Keys.TryGetValue(id, out var cached))
        {
            return cached;
        }
        using var rsa = new RSAOpenSsl(new RSAParameters { Modulus = modulus, Exponent = Exponent(exponent) });
        var key = rsa.DuplicateKeyHandle();
        if (Keys.Count >= CacheCapacity)
        {
            Keys.Clear(); // dropped, not disposed: an operation may still hold one; the finalizer frees it
        }
        var kept = Keys.GetOrAdd(id, key);
        if (!ReferenceEquals(kept, key))
        {
            key.Dispose(); // another thread imported the same key first; ours was never shared
        }
        return kept;
    }

    /// <summary>e big-endian, without leading zero bytes (RSAParameters.Exponent).</summary>
    private static byte[] Exponent(uint e)
    {
        byte[] b = [(byte)(e >> 24), (byte)(e >> 16), (byte)(e >> 8), (byte)e];
        int i = 0;
        while (i < 3 && b[i] == 0)
        {
            i++;
        }
        return b[i..];
    }

    private static CryptographicException Failed(string step)
    {
        var code = OpenSslLibrary.TakeError();
        return new CryptographicException($"the RSA public-key operation failed in OpenSSL at {step} (OpenSSL error 0x{code:x})");
    }

    /// <summary>
    /// Whether libcrypto.so.3 and every function used here load, whether it is the OpenSSL .NET uses
    /// (an EVP_PKEY of one library passed to another would be undefined), and whether one operation
    /// agrees with BigInteger (a random odd 2048-bit modulus: RSAEP needs no factors).
    /// </summary>
    private static string? Probe()
    {
        if (OpenSslLibrary.Problem(Symbols) is { } problem)
        {
            return problem;
        }
        var n = RandomNumberGenerator.GetBytes(256);
        n[0] |= 0x80;
        n[^1] |= 1;
        var m = RandomNumberGenerator.GetBytes(256);
        m[0] = 0;
        try
        {
            return PublicOperation(n, 65537, m).AsSpan().SequenceEqual(SecretSharing.RsaepBigInteger(n, 65537, m))
                ? null
                : "its RSA operation disagrees with BigInteger";
        }
        catch (CryptographicException e)
        {
            return $"a test operation failed: {e.Message}";
        }
    }

    [DllImport(LibCrypto)]
    private static extern nint EVP_PKEY_CTX_new(SafeEvpPKeyHandle pkey, nint engine);

    [DllImport(LibCrypto)]
    private static extern int EVP_PKEY_encrypt_init(nint ctx);

    [DllImport(LibCrypto)]
    private static extern int EVP_PKEY_CTX_set_rsa_padding(nint ctx, int padding);

    [DllImport(LibCrypto)]
    private static extern int EVP_PKEY_encrypt(nint ctx, [Out] byte[]? output, ref nuint outputLength, [In] byte[] input, nuint inputLength);

    [DllImport(LibCrypto)]
    private static extern void EVP_PKEY_CTX_free(nint ctx);
}

using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Rempart.KeyProtection;

namespace Rempart.Guardian.Keys;

/// <summary>
/// ECDH through libcrypto.so.3 — the OpenSSL that .NET's own crypto has loaded — without the peer
/// key check that <c>EVP_PKEY_derive_set_peer</c> (what <c>DeriveRawSecretAgreement</c> calls)
/// repeats in every derivation: OpenSSL 3's <c>EVP_PKEY_public_check</c>, whose main cost is a full
/// scalar multiplication of the peer's point by the group order, about as much CPU as the derivation
/// itself (bench/README.md, "Key release").
/// <para>
/// Why skipping it is sound here: the only peer key this derives with is a <see cref="PeerKey"/>,
/// and the only way to make one is <see cref="PeerKey.Import"/>, where .NET ran OpenSSL's
/// <c>EC_KEY_check_key</c> on the point (coordinates in range, on the curve, not the point at
/// infinity, n·Q = O) and the curve was checked to be P-384 by OID. P-384's cofactor is 1, so a
/// point on the curve other than O already has order n: the repeated check could not refuse a key
/// the import accepted. The key is immutable after the import (nothing calls a setter on the
/// EVP_PKEY), and <see cref="PeerKeyCache"/> finds keys by their exact SubjectPublicKeyInfo bytes,
/// so the key used is the one those bytes describe, checked once. OpenSSL still checks that both
/// keys are on the same group (<c>ecdh_match_params</c>) and that the product is not O.
/// </para>
/// <para>
/// What would make it unsound: a peer key that did not go through <see cref="PeerKey.Import"/>
/// (e.g. made from raw coordinates, or any other constructor or factory added to
/// <see cref="PeerKey"/>), a curve with a cofactor above 1 (X25519/X448, binary curves) or an
/// import that stops validating (a .NET whose SPKI import no longer calls <c>EC_KEY_check_key</c>):
/// an unchecked point off the curve or of small order lets the peer learn bits of the Guardian's
/// private scalar from the Zs it can test (invalid-curve attacks).
/// </para>
/// </summary>
internal static class OpenSslEcdh
{
    private const string LibCrypto = Rempart.Tpm.Crypto.OpenSslLibrary.Name;

    private static readonly string[] Symbols =
        ["EVP_PKEY_CTX_new", "EVP_PKEY_derive_init", "EVP_PKEY_derive_set_peer_ex", "EVP_PKEY_derive", "EVP_PKEY_CTX_free"];

    private static readonly Lazy<string?> Problem = new(Probe, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>
    /// Why this derivation cannot be used in this process (null: it can); then a provider derives
    /// with .NET's <c>DeriveRawSecretAgreement</c> (same Z, with the per-derivation check).
    /// </summary>
    public static string? Unavailable => Problem.Value;

    /// <summary>
    /// Z = x(d·Q), as many bytes as the field (48 for P-384), in a pinned array the caller wipes
    /// (the GC never copies it). Fails closed: <c>keys.ecdh.failed</c> naming the step.
    /// </summary>
    public static byte[] Derive(SafeEvpPKeyHandle privateKey, PeerKey peer)
    {
        ArgumentNullException.ThrowIfNull(privateKey);
        ArgumentNullException.ThrowIfNull(peer);
        // SafeEvpPKeyHandle arguments are AddRef'ed for the length of each call: a key disposed meanwhile is freed after it.
        nint ctx = EVP_PKEY_CTX_new(privateKey, 0);
        if (ctx == 0)
        {
            throw Failed("EVP_PKEY_CTX_new");
        }
        try
        {
            if (EVP_PKEY_derive_init(ctx) != 1)
            {
                throw Failed("EVP_PKEY_derive_init");
            }
            if (EVP_PKEY_derive_set_peer_ex(ctx, peer.Handle, validatePeer: 0) != 1)
            {
                throw Failed("EVP_PKEY_derive_set_peer_ex");
            }
            nuint size = 0;
            if (EVP_PKEY_derive(ctx, null, ref size) != 1 || size is 0 or > 66)
            {
                throw Failed("EVP_PKEY_derive (size)");
            }
            var z = GC.AllocateArray<byte>((int)size, pinned: true);
            nuint written = size;
            if (EVP_PKEY_derive(ctx, z, ref written) != 1 || written != size)
            {
                CryptographicOperations.ZeroMemory(z);
                throw Failed("EVP_PKEY_derive");
            }
            return z;
        }
        finally
        {
            EVP_PKEY_CTX_free(ctx);
        }
    }

    private static KeyProviderException Failed(string step)
    {
        // The error code names OpenSSL's reason (openssl errstr CODE); it carries nothing secret.
        var code = Rempart.Tpm.Crypto.OpenSslLibrary.TakeError();
        return new KeyProviderException("keys.ecdh.failed", $"ECDH failed in OpenSSL at {step} (OpenSSL error 0x{code:x})");
    }

    /// <summary>
    /// Whether libcrypto.so.3 and every function used here load, whether it is the OpenSSL .NET
    /// uses (same version: an EVP_PKEY of one library passed to another would be undefined), and
    /// whether one derivation agrees with .NET's, both ways.
    /// </summary>
    private static string? Probe()
    {
        if (!OperatingSystem.IsLinux())
        {
            return "not Linux";
        }
        if (Rempart.Tpm.Crypto.OpenSslLibrary.Problem(Symbols) is { } problem)
        {
            return problem;
        }
        try
        {
            using var a = new ECDiffieHellmanOpenSsl(ECCurve.NamedCurves.nistP384);
            using var b = new ECDiffieHellmanOpenSsl(ECCurve.NamedCurves.nistP384);
            using var handle = a.DuplicateKeyHandle();
            var peer = PeerKey.Import(b.ExportSubjectPublicKeyInfo());
            var ours1 = Derive(handle, peer);
            var theirs = b.DeriveRawSecretAgreement(a.PublicKey);
            bool same = ours1.AsSpan().SequenceEqual(theirs);
            CryptographicOperations.ZeroMemory(ours1);
            CryptographicOperations.ZeroMemory(theirs);
            return same ? null : "its derivation disagrees with .NET's";
        }
        catch (Exception e) when (e is KeyProviderException or CryptographicException or EntryPointNotFoundException or DllNotFoundException)
        {
            return $"a test derivation failed: {e.Message}";
        }
    }

    [DllImport(LibCrypto)]
    private static extern nint EVP_PKEY_CTX_new(SafeEvpPKeyHandle pkey, nint engine);

    [DllImport(LibCrypto)]
    private static extern int EVP_PKEY_derive_init(nint ctx);

    [DllImport(LibCrypto)]
    private static extern int EVP_PKEY_derive_set_peer_ex(nint ctx, SafeEvpPKeyHandle peer, int validatePeer);

    [DllImport(LibCrypto)]
    private static extern int EVP_PKEY_derive(nint ctx, [Out] byte[]? key, ref nuint keyLength);

    [DllImport(LibCrypto)]
    private static extern void EVP_PKEY_CTX_free(nint ctx);
}

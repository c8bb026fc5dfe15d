using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Rempart.ReleaseBench;

/// <summary>
/// The file provider's derivation (Rempart.Guardian's OpenSslEcdh, internal there), the same calls
/// for the step costs: EVP_PKEY_CTX_new, EVP_PKEY_derive_init, EVP_PKEY_derive_set_peer_ex with
/// validate_peer 0 (the peer key was checked once, on import), EVP_PKEY_derive, EVP_PKEY_CTX_free.
/// </summary>
public static class UncheckedEcdh
{
    private const string LibCrypto = "libcrypto.so.3";

    public static byte[] Derive(SafeEvpPKeyHandle key, SafeEvpPKeyHandle peer)
    {
        nint ctx = EVP_PKEY_CTX_new(key, 0);
        if (ctx == 0)
        {
            throw new CryptographicException("EVP_PKEY_CTX_new failed");
        }
        try
        {
            nuint size = 0;
            if (EVP_PKEY_derive_init(ctx) != 1 || EVP_PKEY_derive_set_peer_ex(ctx, peer, 0) != 1 || EVP_PKEY_derive(ctx, null, ref size) != 1)
            {
                throw new CryptographicException("EVP_PKEY_derive (setup) failed");
            }
            var z = GC.AllocateArray<byte>((int)size, pinned: true);
            if (EVP_PKEY_derive(ctx, z, ref size) != 1)
            {
                throw new CryptographicException("EVP_PKEY_derive failed");
            }
            return z;
        }
        finally
        {
            EVP_PKEY_CTX_free(ctx);
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

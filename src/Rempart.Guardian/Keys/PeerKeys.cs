using System.Security.Cryptography;
using Rempart.KeyProtection;

namespace Rempart.Guardian.Keys;

/// <summary>
/// A peer's P-384 public key — a key protector's ephemeral key — validated and imported once, in
/// the forms the providers use: OpenSSL's key for <see cref="OpenSslEcdh"/> and the .NET key for
/// <c>DeriveRawSecretAgreement</c> (file), the X9.62 uncompressed point for <c>CKM_ECDH1_DERIVE</c>
/// (pkcs11). Public data only: it holds no secret, and nothing derived with it is kept here.
/// Immutable once made; safe to share between threads (a derivation only takes a new reference to
/// the OpenSSL key). The constructor is private: <see cref="Import"/>, which checks the point, is
/// the only way to make one, which is what lets <see cref="OpenSslEcdh"/> skip the check.
/// </summary>
internal sealed class PeerKey
{
    private const string P384Oid = "1.3.132.0.34";

    private PeerKey(ECDiffieHellmanPublicKey publicKey, SafeEvpPKeyHandle handle, byte[] point)
    {
        PublicKey = publicKey;
        Handle = handle;
        _point = point;
    }

    private readonly byte[] _point;

    /// <summary>The key as .NET imported it (OpenSSL's full public-key check passed).</summary>
    public ECDiffieHellmanPublicKey PublicKey { get; }

    /// <summary>
    /// The same imported key's EVP_PKEY (a reference of its own), for <see cref="OpenSslEcdh"/>.
    /// Never disposed while the key is in use: a dropped key is freed by the finalizer once nothing holds it.
    /// </summary>
    internal SafeEvpPKeyHandle Handle { get; }

    /// <summary>04 ‖ X ‖ Y (97 bytes). Callers must not change it.</summary>
    public ReadOnlySpan<byte> Point => _point;

    /// <summary>
    /// Imports a SubjectPublicKeyInfo: a P-384 point that OpenSSL accepts (on the curve, of the
    /// group's order), with nothing after it; <c>keys.peer.invalid</c> otherwise.
    /// </summary>
    public static PeerKey Import(ReadOnlySpan<byte> spki)
    {
        // ECDiffieHellmanOpenSsl (ECDiffieHellman.Create() wraps it) for its EVP_PKEY. Its import
        // of a named-curve point runs EC_KEY_check_key: range, on the curve, not O, n·Q = O.
        using var peer = new ECDiffieHellmanOpenSsl();
        try
        {
            peer.ImportSubjectPublicKeyInfo(spki, out int read);
            var p = peer.ExportParameters(false);
            if (read != spki.Length || p.Curve.Oid?.Value != P384Oid || p.Q.X is not { Length: 48 } x || p.Q.Y is not { Length: 48 } y)
            {
                throw new KeyProviderException("keys.peer.invalid", "the peer public key must be a P-384 SubjectPublicKeyInfo, with nothing after it");
            }
            var point = new byte[97];
            point[0] = 0x04;
            x.CopyTo(point, 1);
            y.CopyTo(point, 49);
            return new PeerKey(peer.PublicKey, peer.DuplicateKeyHandle(), point);
        }
        catch (CryptographicException e)
        {
            throw new KeyProviderException("keys.peer.invalid", "the peer public key is not a valid P-384 point (SubjectPublicKeyInfo, DER)", e);
        }
    }
}

/// <summary>
/// The peer keys imported lately, by their exact SubjectPublicKeyInfo bytes, least recently used
/// dropped first. Importing a P-384 point costs about one ECDH (OpenSSL multiplies it by the group
/// order), and a VM's key protector — hence its ephemeral key — comes back at every start and
/// migration of the VM, so a release of a key protector seen lately skips the import
/// (bench/README.md, "Key release"). What is cached is public and is a pure function of the bytes
/// it is found by: the same bytes give the same key and the same verdict, so a hit is exactly the
/// import it replaces. Only keys that passed the check are kept (a refused key is checked again
/// every time). Nothing secret is cached: not Z, not the VM key, not a private key; every
/// derivation and every check after it (AES-GCM, the key protector's MAC) still runs per release.
/// </summary>
internal sealed class PeerKeyCache(int capacity)
{
    /// <summary>The Guardian's default: ~3 KB per entry (mostly OpenSSL's key), a few MB in all.</summary>
    public const int DefaultCapacity = 1024;

    private readonly Lock _lock = new();
    private readonly Dictionary<string, LinkedListNode<(string Spki, PeerKey Key)>> _entries = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Spki, PeerKey Key)> _order = new();

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _entries.Count;
            }
        }
    }

    /// <summary>The key of <paramref name="spki"/>: the cached import, or a new one (cached once it passed the check).</summary>
    public PeerKey Get(ReadOnlySpan<byte> spki)
    {
        if (capacity <= 0)
        {
            return PeerKey.Import(spki);
        }
        var id = Convert.ToBase64String(spki);
        lock (_lock)
        {
            if (_entries.TryGetValue(id, out var node))
            {
                _order.Remove(node);
                _order.AddFirst(node);
                return node.Value.Key;
            }
        }
        // Outside the lock: two threads may import the same key at once; both results are the same key.
        var key = PeerKey.Import(spki);
        lock (_lock)
        {
            if (_entries.TryGetValue(id, out var raced))
            {
                return raced.Value.Key;
            }
            _entries[id] = _order.AddFirst((id, key));
            if (_entries.Count > capacity)
            {
                // Dropped, not disposed: a derivation may still hold it; the finalizer frees it once none does.
                var last = _order.Last!;
                _order.RemoveLast();
                _entries.Remove(last.Value.Spki);
            }
        }
        return key;
    }
}

using System.Security.Cryptography;
using Rempart.KeyProtection;

namespace Rempart.Guardian.Keys;

/// <summary>
/// What both providers share: the registry of encryption keys and their lifecycle (first key,
/// rotation, retirement, adoption of keys found without a registry entry), key-id lookups and the
/// checks on a peer's public key. A subclass only makes, finds and uses private keys.
/// </summary>
public abstract class KeyProviderBase : IGuardianKeyProvider
{
    private readonly Lock _lock = new();
    private readonly string _registryPath;
    private readonly TimeProvider _time;
    private KeyRegistry _registry;

    /// <summary>Peer keys (key protectors' ephemeral keys) validated and imported lately: public data only.</summary>
    internal PeerKeyCache Peers { get; } = new(PeerKeyCache.DefaultCapacity);

    private protected KeyProviderBase(string registryPath, string kind, TimeProvider time)
    {
        _registryPath = registryPath;
        _time = time;
        _registry = new KeyRegistry { Provider = kind };
    }

    public abstract string Kind { get; }

    public abstract byte[] SigningPublicKey { get; }

    public string SigningKid => KeyRegistry.KidOf(SigningPublicKey);

    public IReadOnlyList<GuardianKeyInfo> EncryptionKeys
    {
        get
        {
            lock (_lock)
            {
                return [.. _registry.EncryptionKeys.Select(e => e.ToInfo())];
            }
        }
    }

    public GuardianKeyInfo ActiveKey
    {
        get
        {
            lock (_lock)
            {
                return _registry.EncryptionKeys.Single(e => e.Status == GuardianKeyStatus.Active).ToInfo();
            }
        }
    }

    /// <summary>The registry as loaded (null on first start), for the subclass to read the signing key's record.</summary>
    private protected KeyRegistry? LoadRegistry() => KeyRegistry.Load(_registryPath, Kind);

    /// <summary>
    /// Reconciles the registry with the keys the provider really holds (<paramref name="present"/>:
    /// kid → SPKI). A key the registry lists as active or retiring that is missing stops the start
    /// (key protectors made for it would no longer open); a key found without an entry — a crash
    /// between writing a key and the registry, or a lost registry — is adopted as retiring; with no
    /// active key, a new one is made.
    /// </summary>
    private protected void Reconcile(KeyRegistry? loaded, IReadOnlyDictionary<string, byte[]> present, string where)
    {
        var registry = loaded ?? new KeyRegistry { Provider = Kind };
        bool changed = loaded is null;
        if (loaded?.SigningKid is { } signingKid && signingKid != SigningKid)
        {
            throw new KeyProviderException("keys.missing",
                $"the signing key {signingKid} listed in {_registryPath} is not the one in {where} ({SigningKid}): restore it (relying parties trust that key)");
        }
        foreach (var e in registry.EncryptionKeys)
        {
            if (e.Status != GuardianKeyStatus.Retired && !present.ContainsKey(e.Kid))
            {
                throw new KeyProviderException("keys.missing",
                    $"encryption key {e.Kid} ({e.Status.ToString().ToLowerInvariant()}) is listed in {_registryPath} but missing from {where}: " +
                    "restore it from a backup (key protectors made for it cannot be opened without it)");
            }
        }
        foreach (var (kid, spki) in present.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            if (!registry.EncryptionKeys.Any(e => e.Kid == kid))
            {
                registry.EncryptionKeys.Add(new KeyRegistryEntry(kid, Convert.ToBase64String(spki), GuardianKeyStatus.Retiring, _time.GetUtcNow()));
                changed = true;
            }
        }
        if (registry.EncryptionKeys.Count(e => e.Status == GuardianKeyStatus.Active) > 1)
        {
            throw new KeyProviderException("keys.registry", $"{_registryPath} lists more than one active encryption key");
        }
        registry = registry with { SigningKid = SigningKid, SigningPublicKey = Convert.ToBase64String(SigningPublicKey) };
        lock (_lock)
        {
            _registry = registry;
            if (!registry.EncryptionKeys.Any(e => e.Status == GuardianKeyStatus.Active))
            {
                AddActiveLocked();
                changed = true;
            }
            if (changed || loaded!.SigningKid is null)
            {
                _registry.Save(_registryPath);
            }
        }
    }

    public GuardianKeyInfo Rotate()
    {
        lock (_lock)
        {
            return AddActiveLocked().ToInfo();
        }
    }

    public GuardianKeyInfo Retire(string kid)
    {
        lock (_lock)
        {
            var entry = Find(kid);
            if (entry.Status == GuardianKeyStatus.Active)
            {
                throw new KeyProviderException("keys.retire.active", $"key {kid} is the active key: rotate first, re-wrap the key protectors made for it, then retire it");
            }
            if (entry.Status == GuardianKeyStatus.Retired)
            {
                return entry.ToInfo();
            }
            var retired = entry with { Status = GuardianKeyStatus.Retired, RetiredAt = _time.GetUtcNow() };
            var next = _registry with { EncryptionKeys = [.. _registry.EncryptionKeys.Select(e => e.Kid == kid ? retired : e)] };
            next.Save(_registryPath);
            _registry = next;
            OnRetired(kid);
            return retired.ToInfo();
        }
    }

    public byte[] DeriveSharedSecret(string kid, ReadOnlySpan<byte> peerSubjectPublicKeyInfo)
    {
        lock (_lock)
        {
            if (Find(kid).Status == GuardianKeyStatus.Retired)
            {
                throw new KeyProviderException("keys.retired", $"key {kid} is retired: it unwraps nothing any more (re-wrapped key protectors use the active key)");
            }
        }
        return Agree(kid, Peers.Get(peerSubjectPublicKeyInfo));
    }

    public abstract byte[] SignEs256(ReadOnlySpan<byte> data);

    /// <summary>Makes and stores a new P-384 key-agreement key; returns its SubjectPublicKeyInfo.</summary>
    private protected abstract byte[] CreateEncryptionKey();

    /// <summary>
    /// ECDH with the private key <paramref name="kid"/> (known, not retired) and a validated P-384
    /// public key: Z, 48 bytes. The peer was imported here, once (and is shared with other
    /// derivations by <see cref="PeerKeyCache"/>): importing a P-384 point costs about one ECDH
    /// itself, so a provider uses this key as it is and never imports it again (bench/README.md, "Key release").
    /// </summary>
    private protected abstract byte[] Agree(string kid, PeerKey peer);

    /// <summary>The key was retired: drop whatever the provider keeps of it in memory.</summary>
    private protected virtual void OnRetired(string kid)
    {
    }

    private KeyRegistryEntry AddActiveLocked()
    {
        var spki = CreateEncryptionKey();
        var entry = new KeyRegistryEntry(KeyRegistry.KidOf(spki), Convert.ToBase64String(spki), GuardianKeyStatus.Active, _time.GetUtcNow());
        var keys = _registry.EncryptionKeys.Select(e => e.Status == GuardianKeyStatus.Active ? e with { Status = GuardianKeyStatus.Retiring } : e).ToList();
        keys.Add(entry);
        var next = _registry with { EncryptionKeys = keys };
        next.Save(_registryPath);
        _registry = next;
        return entry;
    }

    private KeyRegistryEntry Find(string kid) =>
        _registry.EncryptionKeys.FirstOrDefault(e => e.Kid == kid)
        ?? throw new KeyProviderException("keys.unknown-kid", $"no Guardian encryption key {kid} in the {Kind} provider");

    /// <summary>SubjectPublicKeyInfo of a point on a named curve.</summary>
    private protected static byte[] Spki(ECCurve curve, ECPoint q)
    {
        using var k = ECDiffieHellman.Create(new ECParameters { Curve = curve, Q = q });
        return k.ExportSubjectPublicKeyInfo();
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
    }
}

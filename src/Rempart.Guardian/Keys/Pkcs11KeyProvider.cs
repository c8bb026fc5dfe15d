using System.Collections.Concurrent;
using System.Formats.Asn1;
using System.Security.Cryptography;
using System.Text;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using ISession = Net.Pkcs11Interop.HighLevelAPI.ISession;
using Rempart.KeyProtection;

namespace Rempart.Guardian.Keys;

/// <summary>
/// Keys generated inside a PKCS#11 token (an HSM; SoftHSM2 in tests) that never leave it: private
/// keys are token objects with CKA_SENSITIVE, CKA_PRIVATE and without CKA_EXTRACTABLE, and every
/// ECDH (CKM_ECDH1_DERIVE, CKD_NULL) and signature (CKM_ECDSA over the SHA-256 hash) is performed by
/// the token. Keys are found again by label and CKA_ID; the public keys, status and times are in
/// <c>DIR/keys/pkcs11-keys.json</c>. The user PIN comes from a file and is never logged.
/// </summary>
public sealed class Pkcs11KeyProvider : KeyProviderBase
{
    public const string SigningLabel = "rempart-guardian signing key";
    public const string EncryptionLabel = "rempart-guardian encryption key";

    // Named-curve OIDs as CKA_EC_PARAMS wants them (DER, PKCS#11 v2.40 §2.3.3).
    private static readonly byte[] P256Params = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    private static readonly byte[] P384Params = [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];

    private readonly IPkcs11Library _library;
    private readonly Pkcs11SessionPool _sessions;
    private readonly string _token;
    private readonly ConcurrentDictionary<string, IObjectHandle> _privateKeys = new(StringComparer.Ordinal);
    private IObjectHandle? _signingKey;
    private byte[] _signingSpki = [];

    private Pkcs11KeyProvider(string registryPath, IPkcs11Library library, Pkcs11SessionPool sessions, string token, TimeProvider time)
        : base(registryPath, "pkcs11", time)
    {
        _library = library;
        _sessions = sessions;
        _token = token;
    }

    public override string Kind => "pkcs11";

    public override byte[] SigningPublicKey => (byte[])_signingSpki.Clone();

    /// <summary>The token label this provider uses.</summary>
    public string TokenLabel => _token;

    /// <summary>
    /// Loads <paramref name="modulePath"/>, finds the token labelled <paramref name="tokenLabel"/>,
    /// logs in with the PIN in <paramref name="pinFile"/> and finds (or, at first start, generates) the keys.
    /// </summary>
    public static Pkcs11KeyProvider Open(string dataDir, string modulePath, string tokenLabel, string pinFile, TimeProvider? time = null)
    {
        var pin = ReadPin(pinFile);
        var keysDir = Path.Combine(dataDir, "keys");
        AtomicFile.EnsurePrivateDirectory(keysDir);
        var library = Pkcs11Modules.Acquire(modulePath);
        Pkcs11SessionPool? sessions = null;
        try
        {
            var slot = FindToken(library, tokenLabel);
            sessions = new Pkcs11SessionPool(slot, tokenLabel, pin, max: 4);
            var provider = new Pkcs11KeyProvider(Path.Combine(keysDir, "pkcs11-keys.json"), library, sessions, tokenLabel, time ?? TimeProvider.System);
            try
            {
                provider.Load();
                return provider;
            }
            catch
            {
                provider.Dispose();
                throw;
            }
        }
        catch (Exception)
        {
            if (sessions is null)
            {
                CryptographicOperations.ZeroMemory(pin);
                Pkcs11Modules.Release(library);
            }
            throw;
        }
    }

    private static byte[] ReadPin(string pinFile)
    {
        if (!File.Exists(pinFile))
        {
            throw new KeyProviderException("keys.pkcs11.pin-file", $"no PIN file {pinFile}: write the token's user PIN to a 0600 file and pass it with --pkcs11-pin-file");
        }
        if ((File.GetUnixFileMode(pinFile) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
        {
            throw new KeyProviderException("keys.pkcs11.pin-file", $"the PIN file {pinFile} can be read or written by other users: chmod 600 it");
        }
        var text = File.ReadAllText(pinFile).TrimEnd('\r', '\n');
        if (text.Length == 0)
        {
            throw new KeyProviderException("keys.pkcs11.pin-file", $"the PIN file {pinFile} is empty");
        }
        return Encoding.UTF8.GetBytes(text);
    }

    private static ISlot FindToken(IPkcs11Library library, string label)
    {
        var seen = new List<string>();
        foreach (var slot in library.GetSlotList(SlotsType.WithTokenPresent))
        {
            var tokenLabel = slot.GetTokenInfo().Label.TrimEnd(' ', '\0');
            if (tokenLabel == label)
            {
                return slot;
            }
            seen.Add(tokenLabel);
        }
        throw new KeyProviderException("keys.pkcs11.token-not-found",
            $"no token labelled '{label}' in the PKCS#11 module (tokens present: {(seen.Count == 0 ? "none" : string.Join(", ", seen.Select(s => $"'{s}'")))}): " +
            "check --pkcs11-token, or initialise one (scripts/softhsm.sh for SoftHSM2)");
    }

    private void Load()
    {
        var registry = LoadRegistry();
        var signing = Run(s => FindKeys(s, SigningLabel, P256Params));
        if (registry?.SigningKid is { } expected)
        {
            signing = [.. signing.Where(k => KeyRegistry.KidOf(k.Spki) == expected)];
            if (signing.Count == 0)
            {
                throw new KeyProviderException("keys.missing", $"the signing key {expected} is not in token '{_token}': is this the right token? (relying parties trust that key)");
            }
        }
        else if (signing.Count > 1)
        {
            throw new KeyProviderException("keys.pkcs11.ambiguous", $"token '{_token}' holds several '{SigningLabel}' keys and no registry names one: remove the extra ones");
        }
        (_signingKey, _signingSpki) = signing.Count == 1 ? (signing[0].Private, signing[0].Spki) : Run(s => Generate(s, SigningLabel, P256Params, sign: true));

        var present = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (var key in Run(s => FindKeys(s, EncryptionLabel, P384Params)))
        {
            var kid = KeyRegistry.KidOf(key.Spki);
            _privateKeys[kid] = key.Private;
            present[kid] = key.Spki;
        }
        Reconcile(registry, present, $"token '{_token}'");
    }

    private protected override byte[] CreateEncryptionKey()
    {
        var (handle, spki) = Run(s => Generate(s, EncryptionLabel, P384Params, sign: false));
        _privateKeys[KeyRegistry.KidOf(spki)] = handle;
        return spki;
    }

    private protected override byte[] Agree(string kid, PeerKey peerKey)
    {
        if (!_privateKeys.TryGetValue(kid, out var key))
        {
            throw new KeyProviderException("keys.unknown-kid", $"no private key {kid} in token '{_token}'");
        }
        // The peer point uncompressed (X9.62: 04 || X || Y); SoftHSM2 and the PKCS#11 v2.40 text accept it raw.
        var point = peerKey.Point.ToArray();
        var f = Pkcs11Modules.Factories;
        return Run(s =>
        {
            var mechanism = f.MechanismFactory.Create(CKM.CKM_ECDH1_DERIVE, f.MechanismParamsFactory.CreateCkEcdh1DeriveParams((ulong)CKD.CKD_NULL, null, point));
            // Z goes into a session object (never stored on the token) that this session reads once and destroys.
            var template = new List<IObjectAttribute>
            {
                f.ObjectAttributeFactory.Create(CKA.CKA_CLASS, CKO.CKO_SECRET_KEY),
                f.ObjectAttributeFactory.Create(CKA.CKA_KEY_TYPE, CKK.CKK_GENERIC_SECRET),
                f.ObjectAttributeFactory.Create(CKA.CKA_TOKEN, false),
                f.ObjectAttributeFactory.Create(CKA.CKA_PRIVATE, true),
                f.ObjectAttributeFactory.Create(CKA.CKA_SENSITIVE, false),
                f.ObjectAttributeFactory.Create(CKA.CKA_EXTRACTABLE, true),
                f.ObjectAttributeFactory.Create(CKA.CKA_VALUE_LEN, 48UL),
            };
            var secret = s.DeriveKey(mechanism, key, template);
            try
            {
                return s.GetAttributeValue(secret, [CKA.CKA_VALUE])[0].GetValueAsByteArray();
            }
            finally
            {
                s.DestroyObject(secret);
            }
        });
    }

    public override byte[] SignEs256(ReadOnlySpan<byte> data)
    {
        // CKM_ECDSA signs a hash given by the caller and returns r || s (PKCS#11 v2.40 §2.3.6);
        // SoftHSM2 2.6 has no CKM_ECDSA_SHA256, so the hash is computed here.
        var hash = SHA256.HashData(data);
        var key = _signingKey!;
        return Run(s => s.Sign(Pkcs11Modules.Factories.MechanismFactory.Create(CKM.CKM_ECDSA), key, hash));
    }

    /// <summary>Tests only: the handle of a private key, to show that the token refuses to reveal it.</summary>
    internal IObjectHandle PrivateKeyHandle(string kid) => kid == SigningKid ? _signingKey! : _privateKeys[kid];

    /// <summary>Runs <paramref name="action"/> on a pooled session; token errors become <see cref="KeyProviderException"/>.</summary>
    internal T Run<T>(Func<ISession, T> action)
    {
        try
        {
            return _sessions.Use(action);
        }
        catch (Pkcs11Exception e)
        {
            throw new KeyProviderException("keys.pkcs11.operation", $"token '{_token}' failed {e.Method} ({e.RV})", e);
        }
        catch (AttributeValueException e)
        {
            // C_GetAttributeValue said the value is unavailable (seen on SoftHSM2 2.6 reading a derived
            // Z under ~400 derivations/s): a token failure like the others, so the release is refused
            // (503) and audited instead of escaping as an unaudited 500.
            throw new KeyProviderException("keys.pkcs11.operation", $"token '{_token}' did not return an attribute value ({e.Message})", e);
        }
    }

    private sealed record TokenKey(IObjectHandle Private, byte[] Spki);

    /// <summary>Key pairs with <paramref name="label"/>: private and public objects paired by CKA_ID, the public point read from the public object.</summary>
    private List<TokenKey> FindKeys(ISession s, string label, byte[] curveParams)
    {
        var f = Pkcs11Modules.Factories;
        var found = new List<TokenKey>();
        var privates = s.FindAllObjects(
        [
            f.ObjectAttributeFactory.Create(CKA.CKA_CLASS, CKO.CKO_PRIVATE_KEY),
            f.ObjectAttributeFactory.Create(CKA.CKA_KEY_TYPE, CKK.CKK_EC),
            f.ObjectAttributeFactory.Create(CKA.CKA_LABEL, label),
        ]);
        foreach (var priv in privates)
        {
            var attrs = s.GetAttributeValue(priv, [CKA.CKA_ID, CKA.CKA_SENSITIVE, CKA.CKA_EXTRACTABLE, CKA.CKA_NEVER_EXTRACTABLE, CKA.CKA_ALWAYS_SENSITIVE]);
            if (!attrs[1].GetValueAsBool() || attrs[2].GetValueAsBool() || !attrs[3].GetValueAsBool() || !attrs[4].GetValueAsBool())
            {
                throw new KeyProviderException("keys.pkcs11.key-exportable",
                    $"a '{label}' key in token '{_token}' is or was extractable or not sensitive: the Guardian only uses keys generated in the token that never left it; remove it");
            }
            var id = attrs[0].GetValueAsByteArray();
            var publics = s.FindAllObjects(
            [
                f.ObjectAttributeFactory.Create(CKA.CKA_CLASS, CKO.CKO_PUBLIC_KEY),
                f.ObjectAttributeFactory.Create(CKA.CKA_ID, id),
                f.ObjectAttributeFactory.Create(CKA.CKA_LABEL, label),
            ]);
            if (publics.Count != 1)
            {
                throw new KeyProviderException("keys.pkcs11.public-missing", $"the '{label}' key {Convert.ToHexStringLower(id)} in token '{_token}' has {publics.Count} public key objects (expected 1)");
            }
            found.Add(new TokenKey(priv, PublicSpki(s, publics[0], curveParams)));
        }
        return found;
    }

    private static (IObjectHandle Private, byte[] Spki) Generate(ISession s, string label, byte[] curveParams, bool sign)
    {
        var f = Pkcs11Modules.Factories.ObjectAttributeFactory;
        var id = RandomNumberGenerator.GetBytes(16);
        var publicTemplate = new List<IObjectAttribute>
        {
            f.Create(CKA.CKA_TOKEN, true),
            f.Create(CKA.CKA_PRIVATE, false),
            f.Create(CKA.CKA_LABEL, label),
            f.Create(CKA.CKA_ID, id),
            f.Create(CKA.CKA_EC_PARAMS, curveParams),
            f.Create(CKA.CKA_VERIFY, sign),
            f.Create(CKA.CKA_DERIVE, !sign),
        };
        var privateTemplate = new List<IObjectAttribute>
        {
            f.Create(CKA.CKA_TOKEN, true),
            f.Create(CKA.CKA_PRIVATE, true),
            f.Create(CKA.CKA_SENSITIVE, true),
            f.Create(CKA.CKA_EXTRACTABLE, false),
            f.Create(CKA.CKA_LABEL, label),
            f.Create(CKA.CKA_ID, id),
            f.Create(CKA.CKA_SIGN, sign),
            f.Create(CKA.CKA_DERIVE, !sign),
            f.Create(CKA.CKA_DECRYPT, false),
            f.Create(CKA.CKA_UNWRAP, false),
        };
        s.GenerateKeyPair(Pkcs11Modules.Factories.MechanismFactory.Create(CKM.CKM_EC_KEY_PAIR_GEN), publicTemplate, privateTemplate, out var pub, out var priv);
        return (priv, PublicSpki(s, pub, curveParams));
    }

    /// <summary>SubjectPublicKeyInfo from a public key object's CKA_EC_PARAMS and CKA_EC_POINT (a DER OCTET STRING around 04 || X || Y).</summary>
    private static byte[] PublicSpki(ISession s, IObjectHandle pub, byte[] curveParams)
    {
        var attrs = s.GetAttributeValue(pub, [CKA.CKA_EC_PARAMS, CKA.CKA_EC_POINT]);
        if (!attrs[0].GetValueAsByteArray().AsSpan().SequenceEqual(curveParams))
        {
            throw new KeyProviderException("keys.pkcs11.curve", "a Guardian key in the token is on an unexpected curve");
        }
        var curve = curveParams == P256Params ? ECCurve.NamedCurves.nistP256 : ECCurve.NamedCurves.nistP384;
        int n = curveParams == P256Params ? 32 : 48;
        var raw = attrs[1].GetValueAsByteArray();
        if (raw.Length != 2 * n + 1)
        {
            raw = new AsnReader(raw, AsnEncodingRules.DER).ReadOctetString();
        }
        if (raw.Length != 2 * n + 1 || raw[0] != 0x04)
        {
            throw new KeyProviderException("keys.pkcs11.curve", "a Guardian key in the token has a public point that is not uncompressed");
        }
        return Spki(curve, new ECPoint { X = raw[1..(n + 1)], Y = raw[(n + 1)..] });
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _sessions.Dispose();
            Pkcs11Modules.Release(_library);
        }
    }
}

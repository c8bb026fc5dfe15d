using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;

namespace Rempart.KeyProtection;

/// <summary>A Guardian key a key protector is wrapped for: which Guardian, which of its keys.</summary>
public sealed record GuardianRecipient(string GuardianId, GuardianKeyInfo Key);

/// <summary>
/// A key protector (DESIGN.md §3 step 3; format in docs/key-protector.md): a VM's random 256-bit
/// master key wrapped for the tenant's owner key and for one or more Guardian keys, with the VM id
/// and the release policy.
/// <para>Integrity, two layers: (1) every wrap's KDF info and AEAD associated data contain the
/// <em>header digest</em> (SHA-256 of the canonical version, kpId, VM id, policy and creation time), so
/// no wrap opens under a changed header or in another key protector; (2) <c>mac</c> =
/// HMAC-SHA-256 over the canonical encoding of every field with a key derived from the VMK, checked by
/// whoever unwraps before the VMK is returned — so all wraps are bound to the same VMK and no field,
/// wrap list included, changes without detection by a VMK holder.</para>
/// Instances are immutable; <see cref="Rewrap"/> returns a new one.
/// </summary>
public sealed partial class KeyProtector
{
    public const int CurrentVersion = 1;
    public const int KpIdLength = 16;
    public const int MacLength = 32;
    public const int MaxGuardianWraps = 16;
    public const int MaxVmIdLength = 128;

    private const string HeaderLabel = "rempart/kp/v1/header";
    private const string MacLabel = "rempart/kp/v1/mac";
    private const string MacKeyInfo = "rempart/kp/v1/mac-key";

    private readonly byte[] _kpId;
    private readonly byte[] _mac;

    private KeyProtector(byte[] kpId, string vmId, ReleasePolicy policy, DateTimeOffset createdAt, KeyWrap owner, IReadOnlyList<KeyWrap> guardians, byte[] mac)
    {
        _kpId = kpId;
        VmId = vmId;
        Policy = policy;
        CreatedAt = createdAt;
        Owner = owner;
        Guardians = guardians;
        _mac = mac;
    }

    public int Version => CurrentVersion;

    /// <summary>Random 128-bit id of this key protector, base64url; it stays the same through <see cref="Rewrap"/>.</summary>
    public string KpId => Base64Url.EncodeToString(_kpId);

    public string VmId { get; }

    public ReleasePolicy Policy { get; }

    /// <summary>Creation time, UTC, whole seconds.</summary>
    public DateTimeOffset CreatedAt { get; }

    public KeyWrap Owner { get; }

    public IReadOnlyList<KeyWrap> Guardians { get; }

    /// <summary>
    /// A new key protector for <paramref name="vmId"/> with a fresh random VMK, wrapped for the owner
    /// and the active key of each Guardian's (verified) metadata. The caller disposes the VMK.
    /// </summary>
    public static (KeyProtector Kp, VmMasterKey Vmk) Create(string vmId, ReleasePolicy policy, OwnerPublicKey owner, IEnumerable<GuardianMetadata> guardians, TimeProvider? time = null) =>
        Create(vmId, policy, owner, guardians.Select(g => g.Recipient), time);

    /// <summary>As above, with the Guardian keys given directly (each must be <see cref="GuardianKeyStatus.Active"/>).</summary>
    public static (KeyProtector Kp, VmMasterKey Vmk) Create(string vmId, ReleasePolicy policy, OwnerPublicKey owner, IEnumerable<GuardianRecipient> guardians, TimeProvider? time = null)
    {
        if (!KeyIds.IsName(vmId, MaxVmIdLength))
        {
            throw new ArgumentException($"VM id '{vmId}': 1-{MaxVmIdLength} ASCII letters, digits, '.', '-' or '_'", nameof(vmId));
        }
        var recipients = guardians.ToList();
        if (recipients.Count is 0 or > MaxGuardianWraps)
        {
            throw new ArgumentException($"a key protector is wrapped for 1-{MaxGuardianWraps} Guardian keys", nameof(guardians));
        }
        foreach (var r in recipients)
        {
            CheckRecipient(r);
        }
        if (recipients.Select(r => r.Key.Kid).Distinct(StringComparer.Ordinal).Count() != recipients.Count)
        {
            throw new ArgumentException("the same Guardian key is given twice", nameof(guardians));
        }
        var createdAt = StrictJson.TruncateToSeconds((time ?? TimeProvider.System).GetUtcNow());
        var kpId = RandomNumberGenerator.GetBytes(KpIdLength);
        var vmk = VmMasterKey.Generate();
        try
        {
            var digest = HeaderDigest(kpId, vmId, policy, createdAt);
            var ownerWrap = EcdhEsWrap.Seal(vmk.Bytes, owner.SubjectPublicKeyInfo, WrapRecipient.Owner, null, digest);
            var wraps = recipients.Select(r => EcdhEsWrap.Seal(vmk.Bytes, r.Key.SubjectPublicKeyInfo, WrapRecipient.Guardian, r.GuardianId, digest)).ToList();
            var kp = new KeyProtector(kpId, vmId, policy, createdAt, ownerWrap, wraps, []);
            return (kp.WithMac(vmk), vmk);
        }
        catch
        {
            vmk.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The Guardian's unwrap: tries the caller's keys that are not retired, active first, and opens the
    /// first wrap made for one of them; then checks the MAC before returning the VMK. Failures:
    /// <c>kp.no-guardian-key</c> (no wrap for our keys), <c>kp.guardian-key.retired</c> (only for keys
    /// we retired), <c>kp.wrap.tag</c>, <c>kp.integrity</c>. Key-provider failures pass through as
    /// <see cref="KeyProviderException"/>.
    /// </summary>
    public VmMasterKey UnwrapWithGuardian(IGuardianKeyOperations keys, IEnumerable<GuardianKeyInfo> ourKeys)
    {
        var ours = ourKeys.ToList();
        var candidate = ours.Where(k => k.Status != GuardianKeyStatus.Retired)
            .OrderBy(k => k.Status == GuardianKeyStatus.Active ? 0 : 1)
            .Select(k => Guardians.FirstOrDefault(w => w.Kid == k.Kid))
            .FirstOrDefault(w => w is not null);
        if (candidate is null)
        {
            bool retired = ours.Any(k => k.Status == GuardianKeyStatus.Retired && Guardians.Any(w => w.Kid == k.Kid));
            throw retired
                ? new KeyProtectorException("kp.guardian-key.retired", $"key protector {KpId} is wrapped only for Guardian keys that are retired; it should have been re-wrapped before they were")
                : new KeyProtectorException("kp.no-guardian-key", $"key protector {KpId} has no wrap for this Guardian's keys (it is wrapped for {string.Join(", ", Guardians.Select(w => $"{w.GuardianId}/{w.Kid}"))})");
        }
        var kid = candidate.Kid;
        return OpenAndVerify(candidate, epk => keys.DeriveSharedSecret(kid, epk));
    }

    /// <summary>The owner's offline recovery: opens the owner wrap, checks the MAC, returns the VMK.</summary>
    public VmMasterKey RecoverWithOwner(OwnerKey owner)
    {
        if (owner.PublicKey.Kid != Owner.Kid)
        {
            throw new KeyProtectorException("kp.owner.wrong-key", $"key protector {KpId} belongs to owner key {Owner.Kid}, not {owner.PublicKey.Kid}");
        }
        return OpenOwnerWrap(owner.Agree);
    }

    /// <summary>The owner wrap opened with any private-key step (tests memoize the ECDH with it).</summary>
    internal VmMasterKey OpenOwnerWrap(KeyAgreement agree) => OpenAndVerify(Owner, agree);

    /// <summary>Checks the MAC with <paramref name="vmk"/>; <c>kp.integrity</c> when any field was changed or the key is not this KP's.</summary>
    public void VerifyIntegrity(VmMasterKey vmk)
    {
        if (!MacMatches(vmk.Bytes))
        {
            throw IntegrityFailure();
        }
    }

    /// <summary>
    /// Key rotation: a copy with a wrap for <paramref name="add"/> (an active Guardian key) and without
    /// the wraps for <paramref name="removeKids"/>, re-authenticated with <paramref name="vmk"/> (checked
    /// against this KP first). Header and other wraps stay as they are, so the kpId does not change and
    /// the other recipients still open it. At least one Guardian wrap must remain.
    /// </summary>
    public KeyProtector Rewrap(VmMasterKey vmk, GuardianRecipient add, IEnumerable<string>? removeKids = null)
    {
        VerifyIntegrity(vmk);
        CheckRecipient(add);
        var remove = new HashSet<string>(removeKids ?? [], StringComparer.Ordinal);
        remove.Remove(add.Key.Kid);
        var wraps = Guardians.Where(w => !remove.Contains(w.Kid)).ToList();
        if (!wraps.Any(w => w.Kid == add.Key.Kid))
        {
            wraps.Add(EcdhEsWrap.Seal(vmk.Bytes, add.Key.SubjectPublicKeyInfo, WrapRecipient.Guardian, add.GuardianId, HeaderDigest()));
        }
        if (wraps.Count > MaxGuardianWraps)
        {
            throw new ArgumentException($"a key protector holds at most {MaxGuardianWraps} Guardian wraps: remove retired ones", nameof(removeKids));
        }
        return new KeyProtector(_kpId, VmId, Policy, CreatedAt, Owner, wraps, []).WithMac(vmk);
    }

    /// <summary>SHA-256 of the canonical header; in every wrap's KDF info and AEAD associated data.</summary>
    internal byte[] HeaderDigest() => HeaderDigest(_kpId, VmId, Policy, CreatedAt);

    internal ReadOnlySpan<byte> Mac => _mac;

    /// <summary>The canonical header: version, kpId, VM id, shielding, host groups, creation time.</summary>
    internal static byte[] HeaderCanonical(byte[] kpId, string vmId, ReleasePolicy policy, DateTimeOffset createdAt)
    {
        var c = new Canonical().Text(HeaderLabel).U8(CurrentVersion).Bytes(kpId).Text(vmId)
            .Text(ReleasePolicy.ToWire(policy.Shielding)).U32((uint)policy.HostGroups.Count);
        foreach (var g in policy.HostGroups)
        {
            c.Text(g);
        }
        return c.I64(createdAt.ToUnixTimeSeconds()).ToArray();
    }

    /// <summary>What the MAC covers: the canonical header, the owner wrap, then every Guardian wrap in order.</summary>
    internal byte[] MacInput()
    {
        var c = new Canonical().Text(MacLabel).Bytes(HeaderCanonical(_kpId, VmId, Policy, CreatedAt));
        Owner.WriteCanonical(c);
        c.U32((uint)Guardians.Count);
        foreach (var w in Guardians)
        {
            w.WriteCanonical(c);
        }
        return c.ToArray();
    }

    private static byte[] HeaderDigest(byte[] kpId, string vmId, ReleasePolicy policy, DateTimeOffset createdAt) =>
        SHA256.HashData(HeaderCanonical(kpId, vmId, policy, createdAt));

    private VmMasterKey OpenAndVerify(KeyWrap wrap, KeyAgreement agree)
    {
        var key = EcdhEsWrap.Open(wrap, HeaderDigest(), agree);
        if (!MacMatches(key))
        {
            CryptographicOperations.ZeroMemory(key);
            throw IntegrityFailure();
        }
        return new VmMasterKey(key);
    }

    private KeyProtector WithMac(VmMasterKey vmk) =>
        new(_kpId, VmId, Policy, CreatedAt, Owner, Guardians, ComputeMac(vmk.Bytes, MacInput()));

    private bool MacMatches(ReadOnlySpan<byte> vmk)
    {
        var expected = ComputeMac(vmk, MacInput());
        return CryptographicOperations.FixedTimeEquals(expected, _mac);
    }

    /// <summary>mac = HMAC-SHA-256(HKDF-SHA-256(VMK, salt = empty, info = "rempart/kp/v1/mac-key", 32), MacInput).</summary>
    private static byte[] ComputeMac(ReadOnlySpan<byte> vmk, byte[] input)
    {
        Span<byte> macKey = stackalloc byte[32];
        try
        {
            HKDF.DeriveKey(HashAlgorithmName.SHA256, vmk, macKey, salt: [], info: Encoding.ASCII.GetBytes(MacKeyInfo));
            return HMACSHA256.HashData(macKey, input);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(macKey);
        }
    }

    private KeyProtectorException IntegrityFailure() =>
        new("kp.integrity", $"key protector {KpId} fails its integrity check: a field was changed after it was made");

    private static void CheckRecipient(GuardianRecipient r)
    {
        if (!KeyIds.IsName(r.GuardianId))
        {
            throw new ArgumentException($"Guardian id '{r.GuardianId}': 1-64 ASCII letters, digits, '.', '-' or '_'", nameof(r));
        }
        if (r.Key.Status != GuardianKeyStatus.Active)
        {
            throw new ArgumentException($"Guardian key {r.Key.Kid} is {r.Key.Status.ToString().ToLowerInvariant()}: new wraps use the active key only", nameof(r));
        }
        if (r.Key.Kid != KeyIds.Of(r.Key.SubjectPublicKeyInfo))
        {
            throw new ArgumentException($"Guardian key {r.Key.Kid}: the kid does not match its public key", nameof(r));
        }
    }
}

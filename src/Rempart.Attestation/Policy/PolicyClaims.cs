using Rempart.Attestation.Decoding;
using Rempart.Attestation.EventLog;
using Rempart.Tpm;

namespace Rempart.Attestation.Policy;

/// <summary>
/// What a policy can look at, built only from verified material (STYLE.md §5): the events of
/// PCRs whose replay matched a verified quote in every quoted bank, each with its decoded data and
/// whether its digest covers that data; the quoted PCR values; the TPM properties the caller
/// vouches for; and claims derived from those events (Secure Boot state, signature databases,
/// boot applications, kernel command line, S-CRTM version). Nothing here comes from an event of
/// a PCR that did not verify.
/// </summary>
public sealed partial class PolicyClaims
{
    /// <summary>Keys of <see cref="TpmProperties"/> the rules read.</summary>
    public const string ManufacturerProperty = "manufacturer";

    public const string FirmwareVersionProperty = "firmwareVersion";

    private PolicyClaims(
        IReadOnlyList<ClaimEvent> events,
        IReadOnlyDictionary<TpmAlgId, IReadOnlyDictionary<int, byte[]>> pcrs,
        IReadOnlySet<int> verifiedPcrs,
        IReadOnlyDictionary<int, string> unverifiedPcrs,
        IReadOnlyDictionary<string, string> tpmProperties,
        string? firmwareVersion)
    {
        Events = events;
        Pcrs = pcrs;
        VerifiedPcrs = verifiedPcrs;
        UnverifiedPcrs = unverifiedPcrs;
        TpmProperties = tpmProperties;
        TpmFirmwareVersion = firmwareVersion;
        SecureBoot = [.. DeriveSecureBoot(events)];
        Databases = DeriveDatabases(events);
        BootApplications = [.. events.Where(e => e.Type == TcgEventType.EfiBootServicesApplication)
            .Select(e => new BootApplicationClaim(e.Number, e.Pcr, (e.Data as ImageLoadEvent)?.DevicePath, e.Digests))];
        KernelCmdline = [.. events.Select(KernelCmdlineOf).OfType<KernelCmdlineClaim>()];
        ScrtmVersion = [.. events.Where(e => e.Type == TcgEventType.SCrtmVersion && e.Data is SCrtmVersionEvent)
            .Select(e => (e, v: (SCrtmVersionEvent)e.Data))
            .Select(x => new ScrtmVersionClaim(x.e.Number, x.v.Version ?? DecodingText.Guid(x.v.VersionGuid!.Value), x.e.DataVerified))];
    }

    /// <summary>Verified events in log order.</summary>
    public IReadOnlyList<ClaimEvent> Events { get; }

    /// <summary>The PCR values the verified quote attests: bank → PCR → value.</summary>
    public IReadOnlyDictionary<TpmAlgId, IReadOnlyDictionary<int, byte[]>> Pcrs { get; }

    /// <summary>Quoted PCRs whose replay matched in every quoted bank: their events are here.</summary>
    public IReadOnlySet<int> VerifiedPcrs { get; }

    /// <summary>Quoted PCRs whose replay did not match, with what was quoted and replayed: their events are not here.</summary>
    public IReadOnlyDictionary<int, string> UnverifiedPcrs { get; }

    /// <summary>TPM properties the caller passed (case-insensitive keys; <see cref="ManufacturerProperty"/>, <see cref="FirmwareVersionProperty"/>).</summary>
    public IReadOnlyDictionary<string, string> TpmProperties { get; }

    public string? TpmManufacturer => TpmProperties.GetValueOrDefault(ManufacturerProperty);

    /// <summary>
    /// The caller's <see cref="FirmwareVersionProperty"/>, or else the quote's signed
    /// TPMS_ATTEST.firmwareVersion (Part 2 §10.12.12: TPM_PT_FIRMWARE_VERSION_1 || _2) as four
    /// 16-bit parts, "7.85.4555.0".
    /// </summary>
    public string? TpmFirmwareVersion { get; }

    /// <summary>Every verified SecureBoot variable event (normally one), with its value and whether its digest covers it.</summary>
    public IReadOnlyList<SecureBootClaim> SecureBoot { get; }

    /// <summary>
    /// <c>secureboot.enabled</c>: true when the SecureBoot variable is measured in a verified
    /// event whose digest covers its data, and every such measurement says 1.
    /// </summary>
    public bool SecureBootEnabled => SecureBoot.Count > 0 && SecureBoot.All(s => s.Enabled && s.DataVerified);

    /// <summary>Signature databases by variable name (PK, KEK, db, dbx) → every verified measurement of it.</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<SignatureDatabaseClaim>> Databases { get; }

    /// <summary><c>secureboot.db</c>.</summary>
    public IReadOnlyList<SignatureDatabaseClaim> Db => Databases.GetValueOrDefault("db") ?? [];

    /// <summary><c>secureboot.dbx</c>.</summary>
    public IReadOnlyList<SignatureDatabaseClaim> Dbx => Databases.GetValueOrDefault("dbx") ?? [];

    /// <summary><c>boot.applications</c>.</summary>
    public IReadOnlyList<BootApplicationClaim> BootApplications { get; }

    /// <summary><c>kernel.cmdline</c>.</summary>
    public IReadOnlyList<KernelCmdlineClaim> KernelCmdline { get; }

    /// <summary><c>scrtm.version</c>.</summary>
    public IReadOnlyList<ScrtmVersionClaim> ScrtmVersion { get; }

    /// <summary>
    /// Builds the claims of one attestation. <paramref name="verification"/> must be the result
    /// of <see cref="EventLogVerifier.Verify"/> against <paramref name="quoted"/> (checked: a
    /// verdict that does not carry the quoted value is a caller error and throws).
    /// </summary>
    public static PolicyClaims From(LogVerification verification, QuotedPcrs quoted, IReadOnlyDictionary<string, string>? tpmProperties)
    {
        ArgumentNullException.ThrowIfNull(verification);
        ArgumentNullException.ThrowIfNull(quoted);
        foreach (var v in verification.Verdicts)
        {
            if (!quoted.Values.TryGetValue(v.Bank, out var bank) || !bank.TryGetValue(v.Pcr, out var value) || !QuotedPcrs.Same(value, v.Quoted))
            {
                throw new ArgumentException($"the verdict for {TpmHash.ToName(v.Bank)}:{v.Pcr} is not from this quote", nameof(verification));
            }
        }
        var byPcr = verification.Verdicts.GroupBy(v => v.Pcr).ToList();
        var verified = byPcr.Where(g => g.All(v => v.Matched)).Select(g => g.Key).ToHashSet();
        var unverified = byPcr.Where(g => !g.All(v => v.Matched)).ToDictionary(g => g.Key, g => string.Join("; ",
            g.Where(v => !v.Matched).Select(v =>
                $"{TpmHash.ToName(v.Bank)}:{v.Pcr} quoted {Convert.ToHexStringLower(v.Quoted)}, the log replays to {(v.Replayed.Length == 0 ? "nothing" : Convert.ToHexStringLower(v.Replayed))}")));
        var properties = new Dictionary<string, string>(tpmProperties ?? new Dictionary<string, string>(), StringComparer.OrdinalIgnoreCase);
        string? firmware = properties.GetValueOrDefault(FirmwareVersionProperty) ?? QuoteFirmwareVersion(quoted.Attest.FirmwareVersion);
        var events = verification.VerifiedEvents.Where(e => verified.Contains((int)e.Pcr)).Select(e => new ClaimEvent(e)).ToList();
        return new PolicyClaims(events, quoted.Values, verified, unverified, properties, firmware);
    }

    /// <summary>Whether <paramref name="pcr"/> was quoted at all (in any bank).</summary>
    public bool IsQuoted(int pcr) => Pcrs.Values.Any(b => b.ContainsKey(pcr));

    internal static string QuoteFirmwareVersion(ulong v) =>
        $"{(v >> 48) & 0xFFFF}.{(v >> 32) & 0xFFFF}.{(v >> 16) & 0xFFFF}.{v & 0xFFFF}";

    private static IEnumerable<SecureBootClaim> DeriveSecureBoot(IEnumerable<ClaimEvent> events)
    {
        foreach (var e in events)
        {
            if (e.Type == TcgEventType.EfiVariableDriverConfig && e.Data is UefiVariableData
                {
                    VariableName: var vendor, UnicodeName: "SecureBoot", Value: BooleanValue b,
                } && vendor == UefiGuids.GlobalVariable)
            {
                yield return new SecureBootClaim(e.Number, b.Enabled, b.Raw, e.DataVerified);
            }
        }
    }

    private static Dictionary<string, IReadOnlyList<SignatureDatabaseClaim>> DeriveDatabases(IEnumerable<ClaimEvent> events)
    {
        var map = new Dictionary<string, List<SignatureDatabaseClaim>>(StringComparer.Ordinal);
        foreach (var e in events)
        {
            if (e.Type != TcgEventType.EfiVariableDriverConfig || e.Data is not UefiVariableData { Value: SignatureDatabaseValue db } v)
            {
                continue;
            }
            var certificates = new List<CertificateClaim>();
            var hashes = new List<string>();
            var others = new List<string>();
            foreach (var list in db.Lists)
            {
                foreach (var entry in list.Signatures)
                {
                    if (entry.Certificate is { } c)
                    {
                        certificates.Add(new CertificateClaim(c.Subject, c.Sha256Fingerprint));
                    }
                    else if (list.SignatureType == UefiGuids.CertSha256)
                    {
                        hashes.Add(Convert.ToHexStringLower(entry.Data.Span));
                    }
                    else
                    {
                        string type = DecodingText.NamedGuid(list.SignatureType);
                        others.Add(entry.CertificateError is { } err ? $"{type} that does not parse ({err})" : $"{type} {Convert.ToHexStringLower(entry.Data.Span)}");
                    }
                }
            }
            if (!map.TryGetValue(v.UnicodeName, out var claims))
            {
                map[v.UnicodeName] = claims = [];
            }
            claims.Add(new SignatureDatabaseClaim(v.UnicodeName, e.Number, e.DataVerified, certificates, hashes, others));
        }
        return map.ToDictionary(p => p.Key, p => (IReadOnlyList<SignatureDatabaseClaim>)p.Value, StringComparer.Ordinal);
    }

    // RHEL's GRUB logs "grub_kernel_cmdline " / "kernel_cmdline " without the colon upstream uses
    // (EventDataDigests accepts both as covering the command line).
    private static readonly string[] RedHatCmdlinePrefixes = ["grub_kernel_cmdline ", "kernel_cmdline "];

    private static KernelCmdlineClaim? KernelCmdlineOf(ClaimEvent e)
    {
        if (e.Type == TcgEventType.Ipl && e.Data is IplEvent ipl)
        {
            if (ipl.IplKind == IplKind.KernelCmdline)
            {
                return new KernelCmdlineClaim(e.Number, e.Pcr, ipl.Value, e.DataVerified, "GRUB kernel_cmdline (EV_IPL)");
            }
            if (ipl.IplKind == IplKind.Text && RedHatCmdlinePrefixes.FirstOrDefault(p => ipl.Text.StartsWith(p, StringComparison.Ordinal)) is { } prefix)
            {
                return new KernelCmdlineClaim(e.Number, e.Pcr, ipl.Text[prefix.Length..], e.DataVerified, "GRUB kernel_cmdline (EV_IPL)");
            }
            if (ipl.IplKind == IplKind.Utf16Text && e.Pcr is 8 or 12)
            {
                return new KernelCmdlineClaim(e.Number, e.Pcr, ipl.Text, e.DataVerified, "systemd-boot/stub command line (UTF-16 EV_IPL)");
            }
        }
        if (e.Type == TcgEventType.EventTag && e.Data is TaggedEvent { TaggedEventId: TaggedEvent.LinuxLoadOptions })
        {
            return new KernelCmdlineClaim(e.Number, e.Pcr, null, false, "Linux EFI stub LoadOptions (EV_EVENT_TAG, digest only)");
        }
        return null;
    }
}

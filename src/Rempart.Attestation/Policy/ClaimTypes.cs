using System.Text.Json.Nodes;
using Rempart.Attestation.Decoding;
using Rempart.Attestation.EventLog;
using Rempart.Tpm;

namespace Rempart.Attestation.Policy;

/// <summary>
/// A verified event as a policy sees it: its number, PCR, type and digests (bound to the TPM by
/// replay against a verified quote), its decoded data, and whether the digest covers that data
/// (<see cref="DataStatus"/>). A rule reads <see cref="Data"/> only when <see cref="DataVerified"/>.
/// </summary>
public sealed class ClaimEvent
{
    private JsonObject? json;

    internal ClaimEvent(VerifiedEvent e)
    {
        Number = e.Number;
        Pcr = (int)e.Pcr;
        Type = e.Type;
        Digests = e.Event.Digests
            .GroupBy(d => d.Algorithm)
            .ToDictionary(g => g.Key, g => Convert.ToHexStringLower(g.First().Digest.Span));
        // VerifiedEvent.DataVerified is Check() == Match; Check again only to tell "not over
        // the data by definition" (an image's digest) from "should be, and is not".
        DataStatus = e.DataVerified ? DataDigestStatus.Match : EventDataDigests.Check(e.Event);
        Data = EventDataDecoder.Decode(e.Event);
    }

    public int Number { get; }

    public int Pcr { get; }

    public TcgEventType Type { get; }

    /// <summary>The EV_… name of <see cref="Type"/>.</summary>
    public string TypeName => TcgEventTypeNames.Name(Type);

    /// <summary>Bank → digest (lower-case hex).</summary>
    public IReadOnlyDictionary<TpmAlgId, string> Digests { get; }

    public DataDigestStatus DataStatus { get; }

    /// <summary>True when every digest of the event is the hash of its data: its decoded data is evidence.</summary>
    public bool DataVerified => DataStatus == DataDigestStatus.Match;

    public DecodedEventData Data { get; }

    /// <summary>The decoded data as JSON (<see cref="DecodedEventData.ToJson"/>), what <c>data.…</c> fields read.</summary>
    public JsonObject DataJson => json ??= Data.ToJson();

    /// <summary>Why the data is not evidence, for failure messages; null when it is.</summary>
    public string? UncoveredReason => DataStatus switch
    {
        DataDigestStatus.Match => null,
        DataDigestStatus.Mismatch => $"event #{Number} ({TypeName}, PCR {Pcr}): its digest is not the hash of its data",
        _ => $"event #{Number} ({TypeName}, PCR {Pcr}): its digest covers something else (an image, a file, a memory region), not this data",
    };

    public override string ToString() => $"#{Number} PCR {Pcr} {TypeName}: {Data}";
}

/// <summary>The SecureBoot variable (UEFI 2.10 §3.3) as measured in an EV_EFI_VARIABLE_DRIVER_CONFIG event.</summary>
public sealed record SecureBootClaim(int EventNumber, bool Enabled, byte? Raw, bool DataVerified)
{
    /// <summary>"SecureBoot=1", "SecureBoot=0", "SecureBoot=(empty)".</summary>
    public string Describe() => $"SecureBoot={(Raw is { } b ? b.ToString(System.Globalization.CultureInfo.InvariantCulture) : "(empty)")}";
}

/// <summary>An X.509 certificate of a signature database: subject and SHA-256 fingerprint of its DER.</summary>
public sealed record CertificateClaim(string Subject, string Sha256);

/// <summary>
/// A signature database (PK, KEK, db, dbx) as measured in an EV_EFI_VARIABLE_DRIVER_CONFIG event:
/// its certificates, its EFI_CERT_SHA256 hashes, and a description of any other entry (other
/// signature types, certificates that do not parse).
/// </summary>
public sealed record SignatureDatabaseClaim(
    string Name,
    int EventNumber,
    bool DataVerified,
    IReadOnlyList<CertificateClaim> Certificates,
    IReadOnlyList<string> Hashes,
    IReadOnlyList<string> OtherEntries)
{
    /// <summary>Every entry a policy can name: certificate fingerprints and hashes (lower-case hex SHA-256).</summary>
    public IEnumerable<string> Entries => Certificates.Select(c => c.Sha256).Concat(Hashes);
}

/// <summary>
/// A boot application (EV_EFI_BOOT_SERVICES_APPLICATION): the digests of the image, bound by
/// replay, and the device path it was loaded from as logged. The path is not covered by the
/// digest: it describes, it proves nothing.
/// </summary>
public sealed record BootApplicationClaim(int EventNumber, int Pcr, string? DevicePath, IReadOnlyDictionary<TpmAlgId, string> Digests);

/// <summary>
/// A kernel command line a boot loader measured: GRUB's <c>kernel_cmdline</c> EV_IPL (PCR 8),
/// systemd-boot / systemd-stub's UTF-16 EV_IPL (PCR 8 or 12), or the Linux EFI stub's
/// LOADED_IMAGE::LoadOptions EV_EVENT_TAG (PCR 9), which carries only a digest
/// (<see cref="Text"/> is null).
/// </summary>
public sealed record KernelCmdlineClaim(int EventNumber, int Pcr, string? Text, bool DataVerified, string Source);

/// <summary>The S-CRTM version (EV_S_CRTM_VERSION, PCR 0): a version string or a GUID.</summary>
public sealed record ScrtmVersionClaim(int EventNumber, string Version, bool DataVerified);

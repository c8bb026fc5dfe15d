namespace Rempart.Attestation.EventLog;

/// <summary>
/// A known firmware deviation from the PFP replay rules, tried only for a PCR whose standard
/// replay did not match the quote, and recorded in the result when it explains the PCR.
/// </summary>
public sealed record FirmwareQuirk(string Id, string Description, IReadOnlySet<int> Pcrs, byte? Pcr0InitialLocality = null, bool ExtendNoAction = false);

/// <summary>The one table of firmware quirks (STYLE.md: quirks live in one named table).</summary>
public static class FirmwareQuirks
{
    public static IReadOnlyList<FirmwareQuirk> All { get; } =
    [
        new("quirk.startup-locality-ignored",
            "The log records a StartupLocality event but the TPM started PCR 0 at locality 0 (seen on platforms whose S-CRTM logs the event without using locality 3).",
            new HashSet<int> { 0 }, Pcr0InitialLocality: 0),
        new("quirk.startup-locality-3-unlogged",
            "PCR 0 started at locality 3 but the firmware did not log a StartupLocality event.",
            new HashSet<int> { 0 }, Pcr0InitialLocality: 3),
        new("quirk.no-action-extended",
            "The firmware extended EV_NO_ACTION events, which PFP §10.4.1 forbids.",
            Enumerable.Range(0, EventLogReplay.PcrCount).ToHashSet(), ExtendNoAction: true),
    ];
}

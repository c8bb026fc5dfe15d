using System.Text.Json.Nodes;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>How an SP800-155 Event3 locator says where to find a reference manifest or platform certificate.</summary>
public enum LocatorType : uint
{
    Raw = 0,
    Uri = 1,
    DevicePath = 2,
    UefiVariable = 3,
}

/// <summary>A RIM or platform-certificate locator: its type, bytes, and a text form where the type has one.</summary>
public sealed record Sp800155Locator(LocatorType Type, ReadOnlyMemory<byte> Locator)
{
    /// <summary>
    /// URI: the ASCII text; device path: its DevicePathToText form; UEFI variable: "guid:name"
    /// (a 16-byte GUID then a NUL-terminated UCS-2 name, PFP v1.06 §10.4.5.5). Null for raw data, an
    /// empty locator, or a locator that does not have its type's form.
    /// </summary>
    public string? Text
    {
        get
        {
            if (Locator.IsEmpty)
            {
                return null;
            }
            var span = Locator.Span;
            switch (Type)
            {
                case LocatorType.Uri:
                    return DecodingText.TryAscii(span, out var uri) ? uri : null;
                case LocatorType.DevicePath:
                    return DevicePathText.TryFormat(Locator, out var path, out _) ? path : null;
                case LocatorType.UefiVariable when span.Length >= 18 && span.Length % 2 == 0:
                    return DecodingText.TryUtf16(span[16..], out var name) ? $"{DecodingText.Guid(new Guid(span[..16]))}:{name}" : null;
                default:
                    return null;
            }
        }
    }

    public JsonObject ToJson() => new()
    {
        ["type"] = Type.ToString(),
        ["locator"] = Convert.ToHexStringLower(Locator.Span),
        ["text"] = Text,
    };

    public string Describe() => Locator.IsEmpty ? "none" : $"{Type} {(Text is { } t ? DecodingText.Escape(t) : DecodingText.HexPreview(Locator.Span))}";

    internal static Sp800155Locator Read(ref LeReader r, string what)
    {
        var type = (LocatorType)r.U32($"{what}Type");
        uint length = r.U32($"{what}Length");
        return new Sp800155Locator(type, r.Take(length, what));
    }
}

/// <summary>
/// The SP800-155 platform identity EV_NO_ACTION events (PFP v1.05 §10.4.5.4, v1.06 §10.4.5.5):
/// TCG_Sp800_155_PlatformId_Event ("SP800-155 Event\0": PlatformManufacturerId and
/// ReferenceManifestGuid, then, when present, the Event2 strings), TCG_Sp800_155_PlatformId_Event2
/// ("SP800-155 Event2": platform manufacturer, model and version, firmware manufacturer, its IANA
/// id and version, each string u8-size-prefixed and NUL-terminated) and
/// TCG_Sp800_155_PlatformId_Event3 ("SP800-155 Event3": Event2 plus the RIM and platform
/// certificate locators). Layout as in EDK2's UefiTcgPlatform.h.
/// </summary>
public sealed record Sp800155Event(
    int Version,
    uint PlatformManufacturerId,
    Guid ReferenceManifestGuid,
    string? PlatformManufacturer,
    string? PlatformModel,
    string? PlatformVersion,
    string? FirmwareManufacturer,
    uint? FirmwareManufacturerId,
    string? FirmwareVersion,
    Sp800155Locator? RimLocator,
    Sp800155Locator? PlatformCertLocator) : DecodedEventData
{
    public override string Kind => "sp800-155";

    /// <summary>Zero bytes after the last field (see <see cref="DecodingQuirks.MaxSp800155ZeroPadding"/>).</summary>
    public int PaddingBytes { get; init; }

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["version"] = Version;
        o["platformManufacturerId"] = PlatformManufacturerId;
        o["referenceManifestGuid"] = DecodingText.Guid(ReferenceManifestGuid);
        o["platformManufacturer"] = PlatformManufacturer;
        o["platformModel"] = PlatformModel;
        o["platformVersion"] = PlatformVersion;
        o["firmwareManufacturer"] = FirmwareManufacturer;
        o["firmwareManufacturerId"] = FirmwareManufacturerId;
        o["firmwareVersion"] = FirmwareVersion;
        o["rimLocator"] = RimLocator?.ToJson();
        o["platformCertLocator"] = PlatformCertLocator?.ToJson();
        if (PaddingBytes > 0)
        {
            o["paddingBytes"] = PaddingBytes;
        }
        return o;
    }

    protected override string Summary()
    {
        string head = $"SP800-155 Event{(Version > 1 ? Version.ToString() : "")}: manufacturer id {PlatformManufacturerId}, RIM GUID {DecodingText.Guid(ReferenceManifestGuid)}";
        string strings = PlatformManufacturer is null ? ""
            : $", {DecodingText.Quote(PlatformManufacturer)} {DecodingText.Quote(PlatformModel ?? "")} {DecodingText.Quote(PlatformVersion ?? "")}, firmware {DecodingText.Quote(FirmwareManufacturer ?? "")} ({FirmwareManufacturerId}) {DecodingText.Quote(FirmwareVersion ?? "")}";
        string locators = RimLocator is null ? "" : $", RIM {RimLocator.Describe()}, platform cert {PlatformCertLocator?.Describe()}";
        return head + strings + locators;
    }

    internal static Sp800155Event Read(ref LeReader r, int version)
    {
        uint manufacturerId = r.U32("PlatformManufacturerId");
        var guid = r.Guid("ReferenceManifestGuid");
        if (version == 1 && r.AtEnd)
        {
            return new Sp800155Event(1, manufacturerId, guid, null, null, null, null, null, null, null, null);
        }
        string manufacturer = DecodingText.ReadSizedAsciiZ(ref r, "PlatformManufacturerStr");
        string model = DecodingText.ReadSizedAsciiZ(ref r, "PlatformModel");
        string platformVersion = DecodingText.ReadSizedAsciiZ(ref r, "PlatformVersion");
        string firmwareManufacturer = DecodingText.ReadSizedAsciiZ(ref r, "FirmwareManufacturerStr");
        uint firmwareManufacturerId = r.U32("FirmwareManufacturerId");
        string firmwareVersion = DecodingText.ReadSizedAsciiZ(ref r, "FirmwareVersion");
        Sp800155Locator? rim = null, cert = null;
        if (version == 3)
        {
            rim = Sp800155Locator.Read(ref r, "RIMLocator");
            cert = Sp800155Locator.Read(ref r, "PlatformCertLocator");
        }
        int padding = r.Remaining;
        if (padding > DecodingQuirks.MaxSp800155ZeroPadding || r.Rest.ContainsAnyExcept((byte)0))
        {
            throw r.Error($"the end of the SP800-155 event, or at most {DecodingQuirks.MaxSp800155ZeroPadding} zero bytes of padding ({padding} bytes remain)");
        }
        return new Sp800155Event(version, manufacturerId, guid, manufacturer, model, platformVersion,
            firmwareManufacturer, firmwareManufacturerId, firmwareVersion, rim, cert) { PaddingBytes = padding };
    }
}

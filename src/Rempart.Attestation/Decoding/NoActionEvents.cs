using System.Text.Json.Nodes;
using Rempart.Attestation.EventLog;
using Rempart.Tpm;

namespace Rempart.Attestation.Decoding;

/// <summary>
/// TCG_EfiSpecIDEvent (PFP v1.05 §10.4.5.1), the "Spec ID Event03" EV_NO_ACTION event that opens a
/// crypto-agile log: platform class, spec version, UINTN size, the banks and their digest sizes,
/// and vendor information.
/// </summary>
public sealed record SpecIdEventData(
    uint PlatformClass,
    byte SpecVersionMinor,
    byte SpecVersionMajor,
    byte SpecErrata,
    byte UintnSize,
    IReadOnlyList<SpecIdAlgorithm> Algorithms,
    ReadOnlyMemory<byte> VendorInfo) : DecodedEventData
{
    public override string Kind => "spec-id";

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["signature"] = "Spec ID Event03";
        o["platformClass"] = PlatformClass;
        o["specVersion"] = $"{SpecVersionMajor}.{SpecVersionMinor} errata {SpecErrata}";
        o["uintnSize"] = UintnSize;
        o["algorithms"] = new JsonArray([.. Algorithms.Select(a => (JsonNode)new JsonObject
        {
            ["algorithmId"] = $"0x{(ushort)a.Algorithm:x4}",
            ["digestSize"] = a.DigestSize,
        })]);
        o["vendorInfo"] = Convert.ToHexStringLower(VendorInfo.Span);
        return o;
    }

    protected override string Summary() =>
        $"Spec ID Event03: spec {SpecVersionMajor}.{SpecVersionMinor} errata {SpecErrata}, platform class {PlatformClass}, uintn {UintnSize}, " +
        $"banks {string.Join('/', Algorithms.Select(a => $"0x{(ushort)a.Algorithm:x4}({a.DigestSize})"))}";

    internal static SpecIdEventData Read(ref LeReader r)
    {
        uint platformClass = r.U32("platformClass");
        byte minor = r.U8("specVersionMinor");
        byte major = r.U8("specVersionMajor");
        byte errata = r.U8("specErrata");
        byte uintn = r.U8("uintnSize");
        long countAt = r.Offset;
        uint count = r.U32("numberOfAlgorithms");
        if (count > (uint)r.Remaining / 4)
        {
            throw new EventLogFormatException(countAt, $"numberOfAlgorithms × 4 bytes within the {r.Remaining} that remain (got {count})");
        }
        var algorithms = new List<SpecIdAlgorithm>((int)count);
        for (int i = 0; i < count; i++)
        {
            var alg = (TpmAlgId)r.U16($"algorithmId {i}");
            algorithms.Add(new SpecIdAlgorithm(alg, r.U16($"digestSize {i}")));
        }
        int vendorSize = r.U8("vendorInfoSize");
        var vendor = r.Take(vendorSize, "vendorInfo");
        FirmwareBlobEvent.ExpectEnd(ref r, "TCG_EfiSpecIDEvent");
        return new SpecIdEventData(platformClass, minor, major, errata, uintn, algorithms, vendor);
    }
}

/// <summary>TCG_EfiStartupLocalityEvent (PFP v1.05 §10.4.5.3): the locality of TPM2_Startup, which sets PCR 0's initial value.</summary>
public sealed record StartupLocalityEvent(byte StartupLocality) : DecodedEventData
{
    public override string Kind => "startup-locality";

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["startupLocality"] = StartupLocality;
        return o;
    }

    protected override string Summary() => $"StartupLocality {StartupLocality}";

    internal static StartupLocalityEvent Read(ref LeReader r)
    {
        byte locality = r.U8("StartupLocality");
        FirmwareBlobEvent.ExpectEnd(ref r, "TCG_EfiStartupLocalityEvent");
        return new StartupLocalityEvent(locality);
    }
}

/// <summary>
/// NV_INDEX_INSTANCE_EVENT_LOG_DATA ("NvIndexInstance") and NV_INDEX_DYNAMIC_EVENT_LOG_DATA
/// ("NvIndexDynamic") (PFP v1.06 §10.4.5, as EDK2's UefiTcgPlatform.h lays them out): SPDM device
/// measurements extended into NV indices rather than PCRs. Version, and for the dynamic form the
/// UID and description; the device security data itself is kept as bytes.
/// </summary>
public sealed record NvIndexEvent(bool Dynamic, ushort Version, ulong? Uid, string? Description, ReadOnlyMemory<byte> Data) : DecodedEventData
{
    public override string Kind => Dynamic ? "nv-index-dynamic" : "nv-index-instance";

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["version"] = Version;
        if (Uid is { } uid)
        {
            o["uid"] = $"0x{uid:x16}";
        }
        if (Description is not null)
        {
            o["description"] = Description;
        }
        o["data"] = Convert.ToHexStringLower(Data.Span);
        return o;
    }

    protected override string Summary() =>
        $"{(Dynamic ? "NvIndexDynamic" : "NvIndexInstance")} v{Version}{(Uid is { } u ? $" uid 0x{u:x}" : "")}" +
        $"{(Description is null ? "" : " " + DecodingText.Quote(Description))}, {Data.Length} bytes";

    internal static NvIndexEvent Read(ref LeReader r, bool dynamic)
    {
        ushort version = r.U16("Version");
        r.Take(6, "Reserved");
        if (!dynamic)
        {
            return new NvIndexEvent(false, version, null, null, r.Take(r.Remaining, "TCG_DEVICE_SECURITY_EVENT_DATA2"));
        }
        ulong uid = r.U64("Uid");
        int descriptionSize = r.U16("DescriptionSize");
        long at = r.Offset;
        if (!DecodingText.TryAscii(r.Take(descriptionSize, "Description").Span, out var description))
        {
            throw new EventLogFormatException(at, "Description as ASCII text");
        }
        int dataSize = r.U16("DataSize");
        var data = r.Take(dataSize, "Data");
        FirmwareBlobEvent.ExpectEnd(ref r, "NV_INDEX_DYNAMIC_EVENT_LOG_DATA");
        return new NvIndexEvent(true, version, uid, description, data);
    }
}

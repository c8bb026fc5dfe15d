using System.Buffers.Binary;
using System.Text.Json.Nodes;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>
/// UEFI_PLATFORM_FIRMWARE_BLOB / UEFI_PLATFORM_FIRMWARE_BLOB2 (PFP v1.05 §10.2.5): a measured
/// firmware region (EV_EFI_PLATFORM_FIRMWARE_BLOB(2), and the blob form of EV_POST_CODE and
/// EV_S_CRTM_CONTENTS). <see cref="Description"/> is BLOB2's BlobDescription, null for BLOB.
/// </summary>
public sealed record FirmwareBlobEvent(ulong BlobBase, ulong BlobLength, string? Description = null) : DecodedEventData
{
    public override string Kind => "firmware-blob";

    public override JsonObject ToJson()
    {
        var o = NewJson();
        if (Description is not null)
        {
            o["blobDescription"] = Description;
        }
        o["blobBase"] = $"0x{BlobBase:x}";
        o["blobLength"] = $"0x{BlobLength:x}";
        return o;
    }

    protected override string Summary() =>
        $"{(Description is null ? "" : DecodingText.Quote(Description) + " ")}base 0x{BlobBase:x} length 0x{BlobLength:x}";

    internal static FirmwareBlobEvent Read(ref LeReader r)
    {
        ulong blobBase = r.U64("BlobBase");
        ulong length = r.U64("BlobLength");
        ExpectEnd(ref r, "UEFI_PLATFORM_FIRMWARE_BLOB");
        return new FirmwareBlobEvent(blobBase, length);
    }

    internal static FirmwareBlobEvent Read2(ref LeReader r)
    {
        int size = r.U8("BlobDescriptionSize");
        long at = r.Offset;
        var description = r.Take(size, "BlobDescription");
        if (!DecodingText.TryAscii(description.Span, out var text))
        {
            throw new EventLogFormatException(at, "BlobDescription as ASCII text");
        }
        ulong blobBase = r.U64("BlobBase");
        ulong length = r.U64("BlobLength");
        ExpectEnd(ref r, "UEFI_PLATFORM_FIRMWARE_BLOB2");
        return new FirmwareBlobEvent(blobBase, length, text);
    }

    internal static void ExpectEnd(ref LeReader r, string what)
    {
        if (!r.AtEnd)
        {
            throw r.Error($"the end of the {what} ({r.Remaining} bytes remain)");
        }
    }
}

/// <summary>One EFI_CONFIGURATION_TABLE entry (UEFI 2.10 §4.6): a vendor GUID and its table address.</summary>
public sealed record HandoffTable(Guid VendorGuid, ulong VendorTable)
{
    public JsonObject ToJson() => new() { ["vendorGuid"] = DecodingText.GuidJson(VendorGuid), ["vendorTable"] = $"0x{VendorTable:x}" };
}

/// <summary>
/// UEFI_HANDOFF_TABLE_POINTERS (EV_EFI_HANDOFF_TABLES) and UEFI_HANDOFF_TABLE_POINTERS2
/// (EV_EFI_HANDOFF_TABLES2, with a TableDescription) (PFP v1.05 §10.2, §10.4.1): NumberOfTables
/// (UINT64) configuration table entries, e.g. SMBIOS measured into PCR 1.
/// </summary>
public sealed record HandoffTablesEvent(IReadOnlyList<HandoffTable> Tables, string? Description = null) : DecodedEventData
{
    private const int EntryBytes = 16 + 8;

    public override string Kind => "handoff-tables";

    public override JsonObject ToJson()
    {
        var o = NewJson();
        if (Description is not null)
        {
            o["tableDescription"] = Description;
        }
        o["tables"] = new JsonArray([.. Tables.Select(t => (JsonNode)t.ToJson())]);
        return o;
    }

    protected override string Summary() =>
        (Description is null ? "" : DecodingText.Quote(Description) + ": ") +
        string.Join(", ", Tables.Select(t => $"{UefiGuids.Name(t.VendorGuid) ?? DecodingText.Guid(t.VendorGuid)} at 0x{t.VendorTable:x}"));

    internal static HandoffTablesEvent Read(ref LeReader r, bool withDescription)
    {
        string? description = null;
        if (withDescription)
        {
            int size = r.U8("TableDescriptionSize");
            long at = r.Offset;
            if (!DecodingText.TryAscii(r.Take(size, "TableDescription").Span, out var text))
            {
                throw new EventLogFormatException(at, "TableDescription as ASCII text");
            }
            description = text;
        }
        long countAt = r.Offset;
        ulong count = r.U64("NumberOfTables");
        if (count != (ulong)r.Remaining / EntryBytes || r.Remaining % EntryBytes != 0)
        {
            throw new EventLogFormatException(countAt,
                $"NumberOfTables × {EntryBytes} bytes to be the {r.Remaining} bytes that remain (got {count} tables)");
        }
        var tables = new List<HandoffTable>((int)count);
        for (ulong i = 0; i < count; i++)
        {
            var guid = r.Guid($"VendorGuid of table {i}");
            tables.Add(new HandoffTable(guid, r.U64($"VendorTable of table {i}")));
        }
        return new HandoffTablesEvent(tables, description);
    }
}

/// <summary>
/// EV_S_CRTM_VERSION data (PFP v1.05 §10.4.1): a UTF-16 version string (NUL-terminated as EDK2
/// logs it, or plain ASCII characters without the terminator), or a GUID: 16 bytes that are not
/// such a string.
/// </summary>
public sealed record SCrtmVersionEvent(string? Version, Guid? VersionGuid) : DecodedEventData
{
    public override string Kind => "s-crtm-version";

    public override JsonObject ToJson()
    {
        var o = NewJson();
        if (Version is not null)
        {
            o["version"] = Version;
        }
        if (VersionGuid is { } g)
        {
            o["guid"] = DecodingText.Guid(g);
        }
        return o;
    }

    protected override string Summary() => Version is not null ? DecodingText.Quote(Version) : $"GUID {DecodingText.Guid(VersionGuid!.Value)}";

    internal static SCrtmVersionEvent Read(ref LeReader r)
    {
        var data = r.Take(r.Remaining, "S-CRTM version");
        var span = data.Span;
        bool terminated = span.Length >= 2 && span.Length % 2 == 0 && span[^1] == 0 && span[^2] == 0;
        if (DecodingText.TryUtf16(span, out var text) && (terminated || (text.Length > 0 && text.All(char.IsAscii))))
        {
            return new SCrtmVersionEvent(text, null);
        }
        if (span.Length == 16)
        {
            return new SCrtmVersionEvent(null, new Guid(span));
        }
        throw new EventLogFormatException(0,
            $"a NUL-terminated UTF-16 version string or a 16-byte GUID (got {span.Length} bytes: {DecodingText.HexPreview(span)})");
    }
}

/// <summary>
/// EV_SEPARATOR data (PFP v1.05 §10.4.1): a UINT32, 0 for the normal separator and 1 (or
/// 0xFFFFFFFF, the TPM 1.2-era value) when the firmware signals an error. Any other value is kept
/// (Windows' boot manager uses "WBCL" in PCRs 12-14).
/// </summary>
public sealed record SeparatorEvent(uint Value) : DecodedEventData
{
    public override string Kind => "separator";

    public bool IsNormal => Value == 0;

    public bool IsError => Value is 1 or 0xFFFFFFFF;

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["value"] = $"0x{Value:x8}";
        o["separator"] = IsNormal ? "normal" : IsError ? "error" : "other";
        return o;
    }

    protected override string Summary() => IsNormal ? "0x00000000 (normal)"
        : IsError ? $"0x{Value:x8} (ERROR separator)"
        : $"0x{Value:x8}{(DecodingText.TryAscii(LittleEndianBytes(Value), out var t) && t.Length == 4 ? " " + DecodingText.Quote(t) : "")}";

    private static byte[] LittleEndianBytes(uint v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        return b;
    }

    internal static SeparatorEvent Read(ref LeReader r)
    {
        if (r.Remaining != 4)
        {
            throw r.Error($"a 4-byte separator value (got {r.Remaining} bytes)");
        }
        return new SeparatorEvent(r.U32("separator value"));
    }
}

/// <summary>
/// Event data that is a string: EV_EFI_ACTION and EV_ACTION (PFP v1.05 §10.4.1, e.g. "Exit Boot
/// Services Invocation"), EV_OMIT_BOOT_DEVICE_EVENTS ("BOOT ATTEMPTS OMITTED"), EV_EFI_HCRTM_EVENT
/// ("HCRTM"), and the string forms of EV_POST_CODE ("ACPI DATA", "POST CODE", ...), EV_S_CRTM_CONTENTS
/// and EV_COMPACT_HASH. Trailing NULs are removed.
/// </summary>
public sealed record TextEvent(string Text) : DecodedEventData
{
    public override string Kind => "text";

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["text"] = Text;
        return o;
    }

    protected override string Summary() => DecodingText.Quote(Text);

    internal static TextEvent Read(ref LeReader r, string what)
    {
        var data = r.Take(r.Remaining, what);
        if (!DecodingText.TryAscii(data.Span, out var text))
        {
            throw new EventLogFormatException(0, $"{what} as printable ASCII (got {DecodingText.HexPreview(data.Span)})");
        }
        return new TextEvent(text);
    }
}

/// <summary>
/// EV_NONHOST_INFO data (PFP v1.05 §10.4.1): vendor-defined information about a non-host
/// platform component (GCE "GCE NonHostInfo", Intel "IntelCSxEInfoEvent"). <see cref="Label"/> is
/// the leading NUL-terminated ASCII label when there is one.
/// </summary>
public sealed record NonHostInfoEvent(string? Label, ReadOnlyMemory<byte> Data) : DecodedEventData
{
    public override string Kind => "nonhost-info";

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["label"] = Label;
        o["data"] = Convert.ToHexStringLower(Data.Span);
        return o;
    }

    protected override string Summary() => $"{(Label is null ? "" : DecodingText.Quote(Label) + ", ")}{Data.Length} bytes";

    internal static NonHostInfoEvent Read(ref LeReader r)
    {
        var data = r.Take(r.Remaining, "EV_NONHOST_INFO data");
        var span = data.Span;
        int nul = span.IndexOf((byte)0);
        string? label = nul >= 4 && DecodingText.TryAscii(span[..nul], out var s) ? s : null;
        return new NonHostInfoEvent(label, data);
    }
}

using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>
/// Decodes the data of an event by its (untrusted) type, per PFP v1.05 §10.4.1 (which data each
/// event type carries) and the structures of PFP §10.2 and UEFI 2.10. Never throws for bad data:
/// a known type whose data does not have its layout gives a <see cref="DecodeError"/> naming the
/// offset and field; a type with no decoder gives <see cref="RawData"/>. Every length is checked
/// before slicing (<see cref="LeReader"/>); decoded byte fields are slices of the event data, and
/// list sizes are bounded by the bytes present before anything is allocated.
/// </summary>
public static class EventDataDecoder
{
    private const int NoActionSignatureBytes = 16;

    public static DecodedEventData Decode(UntrustedEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        return Decode(e.UntrustedType, e.Data);
    }

    public static DecodedEventData Decode(TcgEventType type, ReadOnlyMemory<byte> data)
    {
        var r = new LeReader(data);
        try
        {
            return DecodeKnown(type, ref r, data) ?? new RawData(data);
        }
        catch (EventLogFormatException ex)
        {
            return new DecodeError($"{TcgEventTypeNames.Name(type)} data at offset {ex.Offset}: expected {ex.Expected}")
            {
                DataOffset = ex.Offset,
                Expected = ex.Expected,
            };
        }
    }

    private static DecodedEventData? DecodeKnown(TcgEventType type, ref LeReader r, ReadOnlyMemory<byte> data) => type switch
    {
        TcgEventType.EfiVariableDriverConfig or TcgEventType.EfiVariableBoot or TcgEventType.EfiVariableBoot2
            or TcgEventType.EfiVariableAuthority => UefiVariableData.Read(ref r, type),
        TcgEventType.EfiBootServicesApplication or TcgEventType.EfiBootServicesDriver
            or TcgEventType.EfiRuntimeServicesDriver => ImageLoadEvent.Read(ref r),
        TcgEventType.EfiGptEvent => GptEvent.Read(ref r),
        TcgEventType.Ipl => (DecodedEventData?)IplEvent.TryRead(data.Span) ?? new RawData(data, "EV_IPL data that is not text"),
        TcgEventType.EventTag => TaggedEvent.Read(ref r),
        TcgEventType.SCrtmVersion => SCrtmVersionEvent.Read(ref r),
        TcgEventType.SCrtmContents => BlobOrText(ref r, data, "EV_S_CRTM_CONTENTS"),
        TcgEventType.PostCode => BlobOrText(ref r, data, "EV_POST_CODE"),
        TcgEventType.EfiPlatformFirmwareBlob => FirmwareBlobEvent.Read(ref r),
        TcgEventType.EfiPlatformFirmwareBlob2 => FirmwareBlobEvent.Read2(ref r),
        TcgEventType.EfiHandoffTables => HandoffTablesEvent.Read(ref r, withDescription: false),
        TcgEventType.EfiHandoffTables2 => HandoffTablesEvent.Read(ref r, withDescription: true),
        TcgEventType.Separator => SeparatorEvent.Read(ref r),
        TcgEventType.EfiAction => TextEvent.Read(ref r, "EV_EFI_ACTION text"),
        TcgEventType.Action => TextEvent.Read(ref r, "EV_ACTION text"),
        TcgEventType.OmitBootDeviceEvents => TextEvent.Read(ref r, "EV_OMIT_BOOT_DEVICE_EVENTS text"),
        TcgEventType.EfiHcrtmEvent => TextEvent.Read(ref r, "EV_EFI_HCRTM_EVENT text"),
        TcgEventType.CompactHash => DecodingText.TryAscii(data.Span, out var text) && text.Length > 0
            ? new TextEvent(text)
            : new RawData(data, "EV_COMPACT_HASH data (platform-defined)"),
        TcgEventType.NonhostInfo => NonHostInfoEvent.Read(ref r),
        TcgEventType.NoAction => NoAction(ref r, data),
        TcgEventType.EfiSpdmFirmwareBlob or TcgEventType.EfiSpdmFirmwareConfig or TcgEventType.EfiSpdmDevicePolicy
            or TcgEventType.EfiSpdmDeviceAuthority => new RawData(data, "SPDM device measurement (not decoded)"),
        _ => null,
    };

    /// <summary>
    /// EV_POST_CODE and EV_S_CRTM_CONTENTS (PFP v1.05 §10.4.1): a UEFI_PLATFORM_FIRMWARE_BLOB when
    /// the data is 16 bytes that are not text, else a string ("ACPI DATA", "Boot Guard Measured
    /// S-CRTM"), else a UEFI_PLATFORM_FIRMWARE_BLOB2.
    /// </summary>
    private static DecodedEventData BlobOrText(ref LeReader r, ReadOnlyMemory<byte> data, string what)
    {
        bool isText = DecodingText.TryAscii(data.Span, out var text) && text.Length > 0;
        if (data.Length == 16 && !isText)
        {
            return FirmwareBlobEvent.Read(ref r);
        }
        if (isText)
        {
            return new TextEvent(text);
        }
        if (data.Length > 0 && data.Span[0] + 1 + 16 == data.Length)
        {
            return FirmwareBlobEvent.Read2(ref r);
        }
        throw r.Error($"{what} data as a UEFI_PLATFORM_FIRMWARE_BLOB (16 bytes), a string or a UEFI_PLATFORM_FIRMWARE_BLOB2 (got {data.Length} bytes)");
    }

    /// <summary>EV_NO_ACTION (PFP v1.05 §10.4.5): a 16-byte signature names the structure that follows.</summary>
    private static DecodedEventData NoAction(ref LeReader r, ReadOnlyMemory<byte> data)
    {
        if (data.Length < NoActionSignatureBytes)
        {
            return new RawData(data, "EV_NO_ACTION without a 16-byte signature");
        }
        var signatureBytes = data.Span[..NoActionSignatureBytes];
        string signature = DecodingText.AsciiUntilNul(signatureBytes).TrimEnd(' ');
        bool nulPadded = signatureBytes[signature.Length..].TrimEnd((byte)0).TrimEnd((byte)' ').IsEmpty;
        r.Take(NoActionSignatureBytes, "EV_NO_ACTION signature");
        DecodedEventData? decoded = !nulPadded ? null : signature switch
        {
            "Spec ID Event03" => SpecIdEventData.Read(ref r),
            "StartupLocality" => StartupLocalityEvent.Read(ref r),
            "SP800-155 Event" => Sp800155Event.Read(ref r, 1),
            "SP800-155 Event2" => Sp800155Event.Read(ref r, 2),
            "SP800-155 Event3" => Sp800155Event.Read(ref r, 3),
            "NvIndexInstance" => NvIndexEvent.Read(ref r, dynamic: false),
            "NvIndexDynamic" => NvIndexEvent.Read(ref r, dynamic: true),
            _ => null,
        };
        return decoded ?? new RawData(data,
            DecodingText.TryAscii(signatureBytes, out var sig) && sig.Length > 0
                ? $"EV_NO_ACTION with unknown signature {DecodingText.Quote(sig)}"
                : "EV_NO_ACTION with no known signature");
    }
}

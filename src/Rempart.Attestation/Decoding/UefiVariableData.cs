using System.Text.Json.Nodes;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>
/// UEFI_VARIABLE_DATA (PFP v1.05 §10.2.6): the event data of EV_EFI_VARIABLE_DRIVER_CONFIG,
/// EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_BOOT2 and EV_EFI_VARIABLE_AUTHORITY. <see cref="VariableName"/>
/// is the vendor GUID (the spec's name for it), <see cref="UnicodeName"/> the variable's name
/// (UnicodeNameLength UTF-16 code units, no terminator) and <see cref="VariableData"/> its
/// VariableDataLength bytes. <see cref="Value"/> is the typed value for the variables a policy
/// reads (null for any other variable).
/// </summary>
public sealed record UefiVariableData(
    Guid VariableName,
    string UnicodeName,
    ulong UnicodeNameLength,
    ulong VariableDataLength,
    ReadOnlyMemory<byte> VariableData,
    UefiVariableValue? Value) : DecodedEventData
{
    private const int FixedBytes = 16 + 8 + 8;

    public override string Kind => "uefi-variable";

    /// <summary>
    /// Bytes after VariableData that the event data holds but VariableDataLength does not count
    /// (tolerated for EV_EFI_VARIABLE_AUTHORITY only, see <see cref="DecodingQuirks.MaxAuthorityTrailingBytes"/>).
    /// </summary>
    public int TrailingBytes { get; init; }

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["variableName"] = DecodingText.GuidJson(VariableName);
        o["unicodeName"] = UnicodeName;
        o["unicodeNameLength"] = UnicodeNameLength;
        o["variableDataLength"] = VariableDataLength;
        o["variableData"] = Convert.ToHexStringLower(VariableData.Span);
        if (Value is not null)
        {
            o["value"] = Value.ToJson();
        }
        if (TrailingBytes > 0)
        {
            o["trailingBytes"] = TrailingBytes;
        }
        return o;
    }

    protected override string Summary()
    {
        string vendor = UefiGuids.Name(VariableName) ?? DecodingText.Guid(VariableName);
        string value = Value?.Describe() ?? (VariableData.IsEmpty ? "(empty)" : $"{VariableData.Length} bytes {DecodingText.HexPreview(VariableData.Span)}");
        string trailing = TrailingBytes > 0 ? $" (+{TrailingBytes} bytes past VariableDataLength)" : "";
        return $"{vendor}:{DecodingText.Escape(UnicodeName)} = {value}{trailing}";
    }

    /// <summary>Decodes UEFI_VARIABLE_DATA; the value is typed per <paramref name="type"/> and the variable's identity.</summary>
    internal static UefiVariableData Read(ref LeReader r, TcgEventType type)
    {
        if (r.Remaining < FixedBytes)
        {
            throw r.Error($"a {FixedBytes}-byte UEFI_VARIABLE_DATA header ({r.Remaining} bytes remain)");
        }
        var vendor = r.Guid("VariableName");
        long nameLengthAt = r.Offset;
        ulong nameLength = r.U64("UnicodeNameLength");
        long dataLengthAt = r.Offset;
        ulong dataLength = r.U64("VariableDataLength");
        if (nameLength > (ulong)r.Remaining / 2)
        {
            throw new EventLogFormatException(nameLengthAt,
                $"a UnicodeNameLength of at most {r.Remaining / 2} characters (the bytes that remain) (got {nameLength})");
        }
        string name = System.Text.Encoding.Unicode.GetString(r.Take((long)nameLength * 2, "UnicodeName").Span);
        if (dataLength > (ulong)r.Remaining)
        {
            throw new EventLogFormatException(dataLengthAt,
                $"a VariableDataLength of at most {r.Remaining} (the bytes after UnicodeName) (got {dataLength})");
        }
        long dataAt = r.Offset;
        var data = r.Take((long)dataLength, "VariableData");
        int trailing = r.Remaining;
        if (trailing > 0 && !(type == TcgEventType.EfiVariableAuthority && trailing <= DecodingQuirks.MaxAuthorityTrailingBytes))
        {
            throw r.Error($"no bytes after VariableData ({trailing} remain beyond VariableDataLength {dataLength})");
        }
        var dr = r.Sub(data, dataAt);
        var value = type == TcgEventType.EfiVariableAuthority
            ? UefiVariableValue.ReadAuthority(vendor, name, ref dr)
            : UefiVariableValue.Read(vendor, name, ref dr);
        return new UefiVariableData(vendor, name, nameLength, dataLength, data, value) { TrailingBytes = trailing };
    }
}

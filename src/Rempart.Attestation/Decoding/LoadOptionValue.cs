using System.Text.Json.Nodes;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>
/// EFI_LOAD_OPTION (UEFI 2.10 §3.1.3), the value of Boot####: Attributes (bit 0 LOAD_OPTION_ACTIVE),
/// FilePathListLength, Description (NUL-terminated UTF-16), FilePathList (FilePathListLength bytes
/// of device paths: the first is the boot device, any others are loader-defined) and OptionalData.
/// </summary>
public sealed record LoadOptionValue(
    uint Attributes,
    ushort FilePathListLength,
    string Description,
    string DevicePath,
    IReadOnlyList<string> MoreFilePaths,
    ReadOnlyMemory<byte> OptionalData) : UefiVariableValue
{
    /// <summary>LOAD_OPTION_ACTIVE.</summary>
    public bool Active => (Attributes & 1) != 0;

    public override JsonObject ToJson()
    {
        var o = new JsonObject
        {
            ["kind"] = "load-option",
            ["attributes"] = Attributes,
            ["active"] = Active,
            ["filePathListLength"] = FilePathListLength,
            ["description"] = Description,
            ["devicePath"] = DevicePath,
        };
        if (MoreFilePaths.Count > 0)
        {
            o["moreFilePaths"] = new JsonArray([.. MoreFilePaths.Select(p => (JsonNode)p)]);
        }
        if (!OptionalData.IsEmpty)
        {
            o["optionalData"] = Convert.ToHexStringLower(OptionalData.Span);
        }
        return o;
    }

    public override string Describe() =>
        $"{DecodingText.Quote(Description)} {DecodingText.Escape(DevicePath)}{(Active ? "" : " (inactive)")}{(OptionalData.IsEmpty ? "" : $" +{OptionalData.Length} bytes optional data")}";

    internal static LoadOptionValue Read(ref LeReader r)
    {
        uint attributes = r.U32("EFI_LOAD_OPTION Attributes");
        ushort pathsLength = r.U16("FilePathListLength");
        string description = DecodingText.ReadUtf16Z(ref r, "Description");
        long pathsAt = r.Offset;
        var paths = r.Take(pathsLength, $"the {pathsLength}-byte FilePathList (FilePathListLength)");
        var pr = r.Sub(paths, pathsAt);
        string first = DevicePathText.ReadPaths(ref pr, "FilePathList device path", out var more);
        var optional = r.Take(r.Remaining, "OptionalData");
        return new LoadOptionValue(attributes, pathsLength, description, first, more, optional);
    }
}

using Rempart.Attestation.Decoding;
using Rempart.Attestation.EventLog;
using static Rempart.Attestation.Tests.Decoding.EventDataBuilder;

namespace Rempart.Attestation.Tests.Decoding;

/// <summary>
/// Malformed event data, one case per rule: each is a <see cref="DecodeError"/> (never an
/// exception) naming the event type, the offset in the event data and the field expected there.
/// </summary>
public sealed class MalformedEventDataTests
{
    private const string Global = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
    private const string Security = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
    private const string X509 = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072";
    private const string Sha256 = "c1c41626-504c-4092-aca9-41f936934328";

    private static EventDataBuilder B() => new();

    private static byte[] Db(EventDataBuilder lists) => Variable(Security, "db", lists);

    private static EventDataBuilder SignatureList(string type, uint listSize, uint headerSize, uint signatureSize) =>
        B().Guid(type).U32(listSize).U32(headerSize).U32(signatureSize);

    private static EventDataBuilder ImageLoad(ulong pathLength) => B().U64(0x1000).U64(0x2000).U64(0).U64(pathLength);

    private static EventDataBuilder Gpt(uint entrySize, ulong count) => B().Ascii("EFI PART").U32(0x10000).U32(92).U32(0).U32(0)
        .U64(1).U64(100).U64(34).U64(90).Guid(Global).U64(2).U32(128).U32(entrySize).U32(0).U64(count);

    private static EventDataBuilder Sp800155(string signature) => B().Ascii(signature).U32(11129).Guid(Global);

    private static readonly Dictionary<string, (TcgEventType Type, byte[] Data, long Offset, string Expected)> Cases = new()
    {
        ["UEFI_VARIABLE_DATA shorter than its header"] = (TcgEventType.EfiVariableDriverConfig, new byte[20], 0, "32-byte UEFI_VARIABLE_DATA header"),
        ["UnicodeNameLength beyond the data"] = (TcgEventType.EfiVariableBoot, B().Guid(Global).U64(1000).U64(0).Utf16("ab"), 16, "UnicodeNameLength of at most 2"),
        ["UnicodeNameLength of 2^64-1"] = (TcgEventType.EfiVariableBoot, B().Guid(Global).U64(ulong.MaxValue).U64(0).Utf16("ab"), 16, "UnicodeNameLength"),
        ["VariableDataLength beyond the data"] = (TcgEventType.EfiVariableBoot, B().Guid(Global).U64(2).U64(100).Utf16("ab").U8(1), 24, "VariableDataLength of at most 1"),
        ["bytes after VariableData"] = (TcgEventType.EfiVariableDriverConfig, B().Raw(Variable(Global, "Foo", [1])).U8(0).U8(0), 39, "no bytes after VariableData"),
        ["authority with more stray bytes than shim adds"] = (TcgEventType.EfiVariableAuthority,
            B().Raw(Variable(Security, "db", new byte[20])).Raw(new byte[9]), 56, "no bytes after VariableData"),
        ["authority shorter than an owner GUID"] = (TcgEventType.EfiVariableAuthority, Variable(Security, "db", [1, 2, 3]), 36, "EFI_SIGNATURE_DATA of at least 16 bytes"),
        ["SecureBoot of two bytes"] = (TcgEventType.EfiVariableDriverConfig, Variable(Global, "SecureBoot", [1, 1]), 52, "1-byte SecureBoot value"),
        ["BootOrder of odd length"] = (TcgEventType.EfiVariableBoot, Variable(Global, "BootOrder", [1, 0, 2]), 50, "BootOrder of UINT16 entries"),
        ["signature list shorter than its header"] = (TcgEventType.EfiVariableDriverConfig, Db(B().Raw(new byte[20])), 36, "28-byte EFI_SIGNATURE_LIST header"),
        ["signature list size smaller than the list header"] = (TcgEventType.EfiVariableDriverConfig, Db(SignatureList(X509, 20, 0, 16)), 52, "SignatureListSize of at least 28"),
        ["signature list size smaller than header and SignatureHeaderSize"] = (TcgEventType.EfiVariableDriverConfig,
            Db(SignatureList(X509, 30, 4, 16).Raw(new byte[2])), 52, "SignatureListSize of at least 28 + SignatureHeaderSize (4)"),
        ["signature list size beyond the data"] = (TcgEventType.EfiVariableDriverConfig, Db(SignatureList(Sha256, 1000, 0, 48).Raw(new byte[10])), 64, "EFI_SIGNATURE_LIST (SignatureListSize)"),
        ["SignatureSize that does not divide the signatures"] = (TcgEventType.EfiVariableDriverConfig,
            Db(SignatureList(X509, 28 + 50, 0, 48).Raw(new byte[50])), 60, "SignatureSize of at least 16 that divides the 50"),
        ["SignatureSize smaller than an owner GUID"] = (TcgEventType.EfiVariableDriverConfig, Db(SignatureList(X509, 28 + 16, 0, 8).Raw(new byte[16])), 60, "SignatureSize of at least 16"),
        ["SHA-256 list whose SignatureSize is not 48"] = (TcgEventType.EfiVariableDriverConfig, Db(SignatureList(Sha256, 28 + 40, 0, 40).Raw(new byte[40])), 60, "SignatureSize of 48"),
        ["Boot#### description without a terminator"] = (TcgEventType.EfiVariableBoot, Variable(Global, "Boot0001", B().U32(1).U16(4).Utf16("abc")), 54, "NUL-terminated UTF-16 Description"),
        ["Boot#### FilePathListLength beyond the data"] = (TcgEventType.EfiVariableBoot,
            Variable(Global, "Boot0001", B().U32(1).U16(100).Utf16("a\0").Raw(new byte[4])), 58, "FilePathList (FilePathListLength)"),
        ["Boot#### device path node length below 4"] = (TcgEventType.EfiVariableBoot,
            Variable(Global, "Boot0001", B().U32(1).U16(8).Utf16("a\0").Hex("01010200").End()), 60, "node length of at least 4 (got 2)"),
        ["UEFI_IMAGE_LOAD_EVENT shorter than its header"] = (TcgEventType.EfiBootServicesApplication, new byte[31], 0, "32-byte UEFI_IMAGE_LOAD_EVENT header"),
        ["LengthOfDevicePath beyond the data"] = (TcgEventType.EfiBootServicesDriver, ImageLoad(100).Raw(new byte[4]), 24, "LengthOfDevicePath of at most 4"),
        ["device path node length below 4"] = (TcgEventType.EfiBootServicesApplication, ImageLoad(8).Hex("01010200").End(), 34, "node length of at least 4 (got 2)"),
        ["device path node longer than the path"] = (TcgEventType.EfiBootServicesApplication, ImageLoad(8).Hex("01014000").End(), 36, "node (1,1) of length 64"),
        ["device path without an End node"] = (TcgEventType.EfiRuntimeServicesDriver, ImageLoad(6).Node(1, 1, "0001"), 38, "End Entire Device Path node"),
        ["device path node too short for its fields"] = (TcgEventType.EfiBootServicesApplication, ImageLoad(9).Node(1, 1, "00").End(), 37, "PCI Device"),
        ["more bytes after the device path than shim adds"] = (TcgEventType.EfiBootServicesApplication, ImageLoad(4).End().Raw(new byte[17]), 36, "at most 16 bytes after the device path"),
        ["two device paths in an image load event"] = (TcgEventType.EfiBootServicesApplication, ImageLoad(8).End().End(), 32, "one device path in LengthOfDevicePath (found 2)"),
        ["GPT header truncated"] = (TcgEventType.EfiGptEvent, new byte[50], 0, "92-byte EFI_PARTITION_TABLE_HEADER"),
        ["GPT signature is not EFI PART"] = (TcgEventType.EfiGptEvent, B().Raw(new byte[8]).Raw(Gpt(128, 0).Build()[8..]), 0, "Signature \"EFI PART\""),
        ["GPT SizeOfPartitionEntry below 128"] = (TcgEventType.EfiGptEvent, Gpt(64, 1).Raw(new byte[64]), 84, "SizeOfPartitionEntry of at least 128"),
        ["GPT partition count × entry size beyond the data"] = (TcgEventType.EfiGptEvent, Gpt(128, 3).Raw(new byte[128]), 92, "NumberOfPartitions × SizeOfPartitionEntry (3 × 128)"),
        ["GPT partition count of 2^64-1"] = (TcgEventType.EfiGptEvent, Gpt(128, ulong.MaxValue).Raw(new byte[128]), 92, "NumberOfPartitions × SizeOfPartitionEntry"),
        ["GPT bytes after the partition entries"] = (TcgEventType.EfiGptEvent, Gpt(128, 1).Raw(new byte[131]), 228, "no bytes after the 1 partition entries"),
        ["tagged event header truncated"] = (TcgEventType.EventTag, new byte[6], 4, "taggedEventDataSize"),
        ["taggedEventDataSize beyond the data"] = (TcgEventType.EventTag, B().U32(1).U32(100).U32(0), 8, "taggedEventData of taggedEventDataSize 100"),
        ["bytes after taggedEventData"] = (TcgEventType.EventTag, B().U32(1).U32(2).Hex("aabbcc"), 10, "no bytes after taggedEventData"),
        ["separator of 3 bytes"] = (TcgEventType.Separator, new byte[3], 0, "4-byte separator value"),
        ["EV_EFI_ACTION that is not text"] = (TcgEventType.EfiAction, B().Hex("00ff10"), 0, "EV_EFI_ACTION text as printable ASCII"),
        ["EV_EFI_HCRTM_EVENT that is not text"] = (TcgEventType.EfiHcrtmEvent, B().Hex("01"), 0, "EV_EFI_HCRTM_EVENT text"),
        ["firmware blob of 15 bytes"] = (TcgEventType.EfiPlatformFirmwareBlob, new byte[15], 8, "BlobLength"),
        ["firmware blob of 17 bytes"] = (TcgEventType.EfiPlatformFirmwareBlob, new byte[17], 16, "end of the UEFI_PLATFORM_FIRMWARE_BLOB"),
        ["BlobDescriptionSize beyond the data"] = (TcgEventType.EfiPlatformFirmwareBlob2, B().U8(50).Ascii("abc"), 1, "BlobDescription"),
        ["NumberOfTables larger than the entries"] = (TcgEventType.EfiHandoffTables, B().U64(2).Guid(Global).U64(0), 0, "NumberOfTables"),
        ["NumberOfTables of 2^63"] = (TcgEventType.EfiHandoffTables, B().U64(1UL << 63).Guid(Global).U64(0), 0, "NumberOfTables"),
        ["S-CRTM version neither a string nor a GUID"] = (TcgEventType.SCrtmVersion, B().Hex("4142434445"), 0, "NUL-terminated UTF-16 version string or a 16-byte GUID"),
        ["POST code neither a blob nor a string"] = (TcgEventType.PostCode, B().Hex("00ff00ff00ff00ff00ff"), 0, "UEFI_PLATFORM_FIRMWARE_BLOB (16 bytes), a string"),
        ["Spec ID event truncated"] = (TcgEventType.NoAction, B().Ascii("Spec ID Event03\0").U16(0), 16, "platformClass"),
        ["numberOfAlgorithms beyond the data"] = (TcgEventType.NoAction, B().Ascii("Spec ID Event03\0").U32(0).U32(0x02000200).U32(1000).U32(0), 24, "numberOfAlgorithms"),
        ["StartupLocality without its locality"] = (TcgEventType.NoAction, B().Ascii("StartupLocality\0"), 16, "StartupLocality"),
        ["StartupLocality with a trailing byte"] = (TcgEventType.NoAction, B().Ascii("StartupLocality\0").U8(3).U8(0), 17, "end of the TCG_EfiStartupLocalityEvent"),
        ["SP800-155 string size beyond the data"] = (TcgEventType.NoAction, Sp800155("SP800-155 Event3").U8(200).Ascii("abc"), 37, "PlatformManufacturerStr"),
        ["SP800-155 string without its NUL"] = (TcgEventType.NoAction, Sp800155("SP800-155 Event2").U8(3).Ascii("abc"), 39, "PlatformManufacturerStr to end with a NUL"),
        ["SP800-155 RIM locator length beyond the data"] = (TcgEventType.NoAction,
            Sp800155("SP800-155 Event3").U8(2).Ascii("a\0").U8(2).Ascii("b\0").U8(1).U8(0).U8(2).Ascii("c\0").U32(1).U8(2).Ascii("1\0").U32(1).U32(1000).U16(0),
            62, "RIMLocator"),
        ["SP800-155 with non-zero bytes after the last field"] = (TcgEventType.NoAction,
            Sp800155("SP800-155 Event2").U8(2).Ascii("a\0").U8(2).Ascii("b\0").U8(1).U8(0).U8(2).Ascii("c\0").U32(1).U8(2).Ascii("1\0").U8(1),
            54, "end of the SP800-155 event"),
        ["NvIndexDynamic description beyond the data"] = (TcgEventType.NoAction, B().Ascii("NvIndexDynamic \0").U16(1).Raw(new byte[6]).U64(7).U16(100).Ascii("ab"), 34, "Description"),
    };

    public static TheoryData<string> Names() => [.. Cases.Keys];

    [Theory]
    [MemberData(nameof(Names))]
    public void Is_a_decode_error_naming_offset_and_field(string name)
    {
        var (type, data, offset, expected) = Cases[name];
        var decoded = EventDataDecoder.Decode(new UntrustedEvent(0, 0, 0, type, [], data));
        var error = Assert.IsType<DecodeError>(decoded);
        Assert.StartsWith($"{TcgEventTypeNames.Name(type)} data at offset {offset}: expected ", error.Message);
        Assert.Contains(expected, error.Message);
        Assert.Equal(offset, error.DataOffset);
        Assert.Equal("error", (string?)error.ToJson()["kind"]);
    }

    [Fact]
    public void Unknown_types_and_unknown_EV_NO_ACTION_signatures_stay_raw()
    {
        Assert.IsType<RawData>(EventDataDecoder.Decode((TcgEventType)0x12345678, new byte[] { 1, 2, 3 }));
        Assert.IsType<RawData>(EventDataDecoder.Decode(TcgEventType.PlatformConfigFlags, new byte[] { 1 }));
        Assert.IsType<RawData>(EventDataDecoder.Decode(TcgEventType.EfiSpdmFirmwareBlob, new byte[40]));
        var noAction = Assert.IsType<RawData>(EventDataDecoder.Decode(TcgEventType.NoAction, B().Ascii("Something Else\0\0").U32(1).Build()));
        Assert.Contains("unknown signature \"Something Else\"", noAction.Note);
        Assert.IsType<RawData>(EventDataDecoder.Decode(TcgEventType.NoAction, new byte[5]));
    }
}

using Rempart.Attestation.Decoding;
using Rempart.Attestation.EventLog;
using static Rempart.Attestation.Tests.Decoding.EventDataBuilder;

namespace Rempart.Attestation.Tests.Decoding;

/// <summary>
/// Well-formed data for the layouts the fixtures do not contain (or contain once), built from
/// the PFP and UEFI layouts, against the decoded form and its one-line summary.
/// </summary>
public sealed class ConstructedEventDataTests
{
    private const string Global = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
    private const string Security = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
    private const string Owner = "77fa9abd-0359-4d32-bd60-28f4e78f784b";
    private const string Rim = "01234567-89ab-cdef-0123-456789abcdef";

    private static EventDataBuilder B() => new();

    private static EventDataBuilder Sp800155Strings(EventDataBuilder b) =>
        b.U8(5).Ascii("ACME\0").U8(6).Ascii("Model\0").U8(2).Ascii("1\0").U8(5).Ascii("ACME\0").U32(42).U8(4).Ascii("2.0\0");

    private static readonly Dictionary<string, (TcgEventType Type, byte[] Data, string Kind, string Summary)> Cases = new()
    {
        ["EV_EFI_PLATFORM_FIRMWARE_BLOB2"] = (TcgEventType.EfiPlatformFirmwareBlob2, B().U8(3).Ascii("PEI").U64(0x820000).U64(0xe0000),
            "firmware-blob", "\"PEI\" base 0x820000 length 0xe0000"),
        ["EV_POST_CODE as a blob"] = (TcgEventType.PostCode, B().U64(0xffa00000).U64(0x600000), "firmware-blob", "base 0xffa00000 length 0x600000"),
        ["EV_POST_CODE as a BLOB2"] = (TcgEventType.PostCode, B().U8(4).Ascii("SMM\0").U64(0x1000).U64(0x10), "firmware-blob", "\"SMM\" base 0x1000 length 0x10"),
        ["EV_POST_CODE as text"] = (TcgEventType.PostCode, B().Ascii("POST CODE"), "text", "\"POST CODE\""),
        ["EV_EFI_HANDOFF_TABLES2"] = (TcgEventType.EfiHandoffTables2, B().U8(6).Ascii("SMBIOS").U64(1).Guid("f2fd1544-9794-4a2c-992e-e5bbcf20e394").U64(0x7000),
            "handoff-tables", "\"SMBIOS\": SMBIOS3_TABLE_GUID at 0x7000"),
        ["EV_OMIT_BOOT_DEVICE_EVENTS"] = (TcgEventType.OmitBootDeviceEvents, B().Ascii("BOOT ATTEMPTS OMITTED"), "text", "\"BOOT ATTEMPTS OMITTED\""),
        ["EV_SEPARATOR error (PFP)"] = (TcgEventType.Separator, B().U32(1), "separator", "0x00000001 (ERROR separator)"),
        ["EV_SEPARATOR error (TPM 1.2 era)"] = (TcgEventType.Separator, B().U32(0xFFFFFFFF), "separator", "0xffffffff (ERROR separator)"),
        ["EV_S_CRTM_VERSION GUID"] = (TcgEventType.SCrtmVersion, B().Guid(Rim), "s-crtm-version", $"GUID {Rim}"),
        ["EV_COMPACT_HASH text"] = (TcgEventType.CompactHash, B().Ascii("Dell Configuration Information 1"), "text", "\"Dell Configuration Information 1\""),
        ["EV_IPL module_cmdline"] = (TcgEventType.Ipl, B().Ascii("module_cmdline: /initrd.img quiet\0"), "ipl", "ModuleCmdline: \"module_cmdline: /initrd.img quiet\""),
        ["EV_EVENT_TAG unknown id"] = (TcgEventType.EventTag, B().U32(0x1234).U32(2).Hex("0102"), "tagged-event", "tag 0x00001234: 2 bytes 0102"),
        ["SP800-155 Event (VendorId and GUID only)"] = (TcgEventType.NoAction, B().Ascii("SP800-155 Event\0").U32(7).Guid(Rim),
            "sp800-155", $"SP800-155 Event: manufacturer id 7, RIM GUID {Rim}"),
        ["SP800-155 Event2"] = (TcgEventType.NoAction, Sp800155Strings(B().Ascii("SP800-155 Event2").U32(7).Guid(Rim)),
            "sp800-155", $"SP800-155 Event2: manufacturer id 7, RIM GUID {Rim}, \"ACME\" \"Model\" \"1\", firmware \"ACME\" (42) \"2.0\""),
        ["SP800-155 Event3 with a device path locator"] = (TcgEventType.NoAction,
            Sp800155Strings(B().Ascii("SP800-155 Event3").U32(7).Guid(Rim)).U32(2).U32(10).Node(1, 1, "0002").End().U32(1).U32(4).Ascii("x:/\0"),
            "sp800-155", $"SP800-155 Event3: manufacturer id 7, RIM GUID {Rim}, \"ACME\" \"Model\" \"1\", firmware \"ACME\" (42) \"2.0\", RIM DevicePath Pci(0x2,0x0), platform cert Uri x:/"),
        ["NvIndexInstance"] = (TcgEventType.NoAction, B().Ascii("NvIndexInstance\0").U16(1).Raw(new byte[6]).Hex("aabbcc"), "nv-index-instance", "NvIndexInstance v1, 3 bytes"),
        ["NvIndexDynamic"] = (TcgEventType.NoAction, B().Ascii("NvIndexDynamic \0").U16(1).Raw(new byte[6]).U64(7).U16(17).Ascii("SPDM MEASUREMENTS").U16(2).Hex("0102"),
            "nv-index-dynamic", "NvIndexDynamic v1 uid 0x7 \"SPDM MEASUREMENTS\", 2 bytes"),
        ["Boot#### inactive, with optional data, as EV_EFI_VARIABLE_BOOT2"] = (TcgEventType.EfiVariableBoot2,
            Variable(Global, "Boot000A", B().U32(0).U16(9).Utf16("Net\0").Node(3, 17, "00").Node(0x7F, 0xFF, "").Hex("beef")),
            "uefi-variable", "EFI_GLOBAL_VARIABLE:Boot000A = \"Net\" Unit(0x0) (inactive) +2 bytes optional data"),
        ["SecureBoot with a value other than 0 or 1"] = (TcgEventType.EfiVariableDriverConfig, Variable(Global, "SecureBoot", [2]),
            "uefi-variable", "EFI_GLOBAL_VARIABLE:SecureBoot = 2 (disabled)"),
        ["a variable with no typed value"] = (TcgEventType.EfiVariableBoot, Variable(Global, "Timeout", [5, 0]),
            "uefi-variable", "EFI_GLOBAL_VARIABLE:Timeout = 2 bytes 0500"),
        ["authority by SHA-256 hash"] = (TcgEventType.EfiVariableAuthority, Variable(Security, "db", B().Guid(Owner).Raw(new byte[32])),
            "uefi-variable", $"EFI_IMAGE_SECURITY_DATABASE_GUID:db = {new string('0', 64)}, owner MicrosoftSignatureOwner ({Owner})"),
        ["db with an X.509 entry that is not a certificate"] = (TcgEventType.EfiVariableDriverConfig,
            Variable(Security, "db", B().Guid("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").U32(28 + 20).U32(0).U32(20).Guid(Owner).Hex("30020500")),
            "uefi-variable", "EFI_IMAGE_SECURITY_DATABASE_GUID:db = 1 signature lists: 0 certificates, 0 SHA-256 hashes, 1 other"),
        ["GPT with one partition"] = (TcgEventType.EfiGptEvent,
            B().Ascii("EFI PART").U32(0x10000).U32(92).U32(0).U32(0).U64(1).U64(100).U64(34).U64(90).Guid(Rim).U64(2).U32(128).U32(128).U32(0).U64(1)
                .Guid("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").Guid(Owner).U64(34).U64(90).U64(0).Utf16("EFI").Raw(new byte[66]),
            "gpt", $"disk {Rim}, 1 partitions: \"EFI\" EFI System Partition"),
    };

    public static TheoryData<string> Names() => [.. Cases.Keys];

    [Theory]
    [MemberData(nameof(Names))]
    public void Decodes_to_its_form_and_summary(string name)
    {
        var (type, data, kind, summary) = Cases[name];
        var decoded = EventDataDecoder.Decode(type, data);
        Assert.Equal(summary, decoded.ToString());
        Assert.Equal(kind, decoded.Kind);
        Assert.Equal(kind, (string?)decoded.ToJson()["kind"]);
    }

    [Fact]
    public void An_unparsable_certificate_is_reported_on_its_entry_not_as_a_decode_error()
    {
        var (type, data, _, _) = Cases["db with an X.509 entry that is not a certificate"];
        var db = Assert.IsType<SignatureDatabaseValue>(Assert.IsType<UefiVariableData>(EventDataDecoder.Decode(type, data)).Value);
        var entry = Assert.Single(db.Entries);
        Assert.Null(entry.Certificate);
        Assert.NotNull(entry.CertificateError);
    }

    [Fact]
    public void Well_known_GUIDs_have_names()
    {
        Assert.Equal("EFI_GLOBAL_VARIABLE", UefiGuids.Name(new Guid(Global)));
        Assert.Equal("EFI_IMAGE_SECURITY_DATABASE_GUID", UefiGuids.Name(UefiGuids.ImageSecurityDatabase));
        Assert.Equal("EFI_CERT_X509_GUID", UefiGuids.Name(new Guid("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")));
        Assert.Equal("EFI_CERT_SHA256_GUID", UefiGuids.Name(new Guid("c1c41626-504c-4092-aca9-41f936934328")));
        Assert.Equal("SHIM_LOCK_GUID", UefiGuids.Name(new Guid("605dab50-e046-4300-abb6-3dd810dd8b23")));
        Assert.Equal("EFI_ACPI_20_TABLE_GUID", UefiGuids.Name(new Guid("8868e871-e4f1-11d3-bc22-0080c73c8881")));
        Assert.Equal("SMBIOS_TABLE_GUID", UefiGuids.Name(new Guid("eb9d2d31-2d88-11d3-9a16-0090273fc14d")));
        Assert.Null(UefiGuids.Name(new Guid(Rim)));
        // The mixed-endian UEFI layout is what Guid(ReadOnlySpan<byte>) reads.
        Assert.Equal(UefiGuids.GlobalVariable, new Guid(Convert.FromHexString("61dfe48bca93d211aa0d00e098032b8c")));
    }
}

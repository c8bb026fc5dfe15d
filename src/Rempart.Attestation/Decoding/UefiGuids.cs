namespace Rempart.Attestation.Decoding;

/// <summary>
/// Well-known GUIDs that appear in event data, with the names the specifications give them.
/// GUIDs in UEFI structures are stored mixed-endian (UEFI 2.10 Appendix A: the first three
/// fields little-endian), which is exactly the layout <c>new Guid(ReadOnlySpan&lt;byte&gt;)</c> reads.
/// </summary>
public static class UefiGuids
{
    /// <summary>EFI_GLOBAL_VARIABLE (UEFI 2.10 §3.3): SecureBoot, PK, KEK, BootOrder, Boot####.</summary>
    public static readonly Guid GlobalVariable = new("8be4df61-93ca-11d2-aa0d-00e098032b8c");

    /// <summary>EFI_IMAGE_SECURITY_DATABASE_GUID (UEFI 2.10 §32.6.1): db, dbx, dbt, dbr.</summary>
    public static readonly Guid ImageSecurityDatabase = new("d719b2cb-3d3a-4596-a3bc-dad00e67656f");

    /// <summary>EFI_CERT_X509_GUID (UEFI 2.10 §32.4.1): a DER X.509 certificate.</summary>
    public static readonly Guid CertX509 = new("a5c059a1-94e4-4aa7-87b5-ab155c2bf072");

    /// <summary>EFI_CERT_SHA256_GUID (UEFI 2.10 §32.4.1): a SHA-256 image hash.</summary>
    public static readonly Guid CertSha256 = new("c1c41626-504c-4092-aca9-41f936934328");

    /// <summary>SHIM_LOCK_GUID: the vendor GUID of shim's variables (MokList, SbatLevel, ...).</summary>
    public static readonly Guid ShimLock = new("605dab50-e046-4300-abb6-3dd810dd8b23");

    /// <summary>The signature owner Microsoft uses in db/KEK entries.</summary>
    public static readonly Guid MicrosoftSignatureOwner = new("77fa9abd-0359-4d32-bd60-28f4e78f784b");

    /// <summary>EFI_ACPI_20_TABLE_GUID (UEFI 2.10 §4.6.1).</summary>
    public static readonly Guid Acpi20Table = new("8868e871-e4f1-11d3-bc22-0080c73c8881");

    /// <summary>SMBIOS_TABLE_GUID (UEFI 2.10 §4.6.1).</summary>
    public static readonly Guid SmbiosTable = new("eb9d2d31-2d88-11d3-9a16-0090273fc14d");

    /// <summary>SMBIOS3_TABLE_GUID (UEFI 2.10 §4.6.1).</summary>
    public static readonly Guid Smbios3Table = new("f2fd1544-9794-4a2c-992e-e5bbcf20e394");

    private static readonly Dictionary<Guid, string> Names = new()
    {
        // Variable vendors (UEFI 2.10 §3.3, §32.6.1) and shim.
        [GlobalVariable] = "EFI_GLOBAL_VARIABLE",
        [ImageSecurityDatabase] = "EFI_IMAGE_SECURITY_DATABASE_GUID",
        [ShimLock] = "SHIM_LOCK_GUID",
        [MicrosoftSignatureOwner] = "MicrosoftSignatureOwner",
        // Signature types (UEFI 2.10 §32.4.1).
        [CertX509] = "EFI_CERT_X509_GUID",
        [CertSha256] = "EFI_CERT_SHA256_GUID",
        [new("826ca512-cf10-4ac9-b187-be01496631bd")] = "EFI_CERT_SHA1_GUID",
        [new("0b6e5233-a65c-44c9-9407-d9ab83bfc8bd")] = "EFI_CERT_SHA224_GUID",
        [new("ff3e5307-9fd0-48c9-85f1-8ad56c701e01")] = "EFI_CERT_SHA384_GUID",
        [new("093e0fae-a6c4-4f50-9f1b-d41e2b89c19a")] = "EFI_CERT_SHA512_GUID",
        [new("3c5766e8-269c-4e34-aa14-ed776e85b3b6")] = "EFI_CERT_RSA2048_GUID",
        [new("e2b36190-879b-4a3d-ad8d-f2e7bba32784")] = "EFI_CERT_RSA2048_SHA256_GUID",
        [new("67f8444f-8743-48f1-a328-1eaab8736080")] = "EFI_CERT_RSA2048_SHA1_GUID",
        [new("3bd2a492-96c0-4079-b420-fcf98ef103ed")] = "EFI_CERT_X509_SHA256_GUID",
        [new("7076876e-80c2-4ee6-aad2-28b349a6865b")] = "EFI_CERT_X509_SHA384_GUID",
        [new("446dbf63-2502-4cda-bcfa-2465d2b0fe9d")] = "EFI_CERT_X509_SHA512_GUID",
        [new("4aafd29d-68df-49ee-8aa9-347d375665a7")] = "EFI_CERT_TYPE_PKCS7_GUID",
        // Configuration tables (UEFI 2.10 §4.6).
        [Acpi20Table] = "EFI_ACPI_20_TABLE_GUID",
        [new("eb9d2d30-2d88-11d3-9a16-0090273fc14d")] = "ACPI_TABLE_GUID",
        [SmbiosTable] = "SMBIOS_TABLE_GUID",
        [Smbios3Table] = "SMBIOS3_TABLE_GUID",
        [new("eb9d2d2f-2d88-11d3-9a16-0090273fc14d")] = "MPS_TABLE_GUID",
        [new("eb9d2d32-2d88-11d3-9a16-0090273fc14d")] = "SAL_SYSTEM_TABLE_GUID",
        [new("dcfa911d-26eb-469f-a220-38b7dc461220")] = "EFI_MEMORY_ATTRIBUTES_TABLE_GUID",
        [new("b122a263-3661-4f68-9929-78f8b0d62180")] = "EFI_SYSTEM_RESOURCE_TABLE_GUID",
        [new("b1b621d5-f19c-41a5-830b-d9152c69aae0")] = "EFI_DTB_TABLE_GUID",
        // Messaging vendor device path nodes (UEFI 2.10 §10.3.4).
        [new("e0c14753-f9be-11d2-9a0c-0090273fc14d")] = "EFI_PC_ANSI_GUID",
        [new("dfa66065-b419-11d3-9a2d-0090273fc14d")] = "EFI_VT_100_GUID",
        [new("7baec70b-57e0-4c76-8e87-2f9e28088343")] = "EFI_VT_100_PLUS_GUID",
        [new("ad15a0d6-8bec-4acf-a073-d01de77e2d88")] = "EFI_VT_UTF8_GUID",
        [new("37499a9d-542f-4c89-a026-35da142094e4")] = "EFI_UART_DEVICE_PATH_GUID",
        [new("d487ddb4-008b-11d9-afdc-001083ffca4d")] = "EFI_SAS_DEVICE_PATH_GUID",
        // GPT partition types (UEFI 2.10 §5.3.3 and common practice).
        [new("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")] = "EFI System Partition",
        [new("21686148-6449-6e6f-744e-656564454649")] = "BIOS boot partition",
        [new("0fc63daf-8483-4772-8e79-3d69d8477de4")] = "Linux filesystem data",
        [new("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f")] = "Linux swap",
        [new("e6d6d379-f507-44c2-a23c-238f2a3df928")] = "Linux LVM",
        [new("4f68bce3-e8cd-4db1-96e7-fbcaf984b709")] = "Linux root (x86-64)",
        [new("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7")] = "Microsoft basic data",
        [new("e3c9e316-0b5c-4db8-817d-f92df00215ae")] = "Microsoft reserved",
        [new("de94bba4-06d1-4d40-a16a-bfd50179d6ac")] = "Windows recovery environment",
        [new("fe3a2a5d-4f32-41a7-b725-accc3285a309")] = "ChromeOS kernel",
        [new("3cb8e202-3b7e-47dd-8a3c-7ff2a13cfcec")] = "ChromeOS root",
    };

    /// <summary>The well-known name of a GUID, or null.</summary>
    public static string? Name(Guid guid) => Names.GetValueOrDefault(guid);
}

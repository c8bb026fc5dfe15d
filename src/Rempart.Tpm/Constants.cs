namespace Rempart.Tpm;

/// <summary>TPM_ALG_ID (TPM 2.0 Library Part 2, §6.3; TCG Algorithm Registry).</summary>
public enum TpmAlgId : ushort
{
    Error = 0x0000,
    Rsa = 0x0001,
    Tdes = 0x0003,
    Sha1 = 0x0004,
    Hmac = 0x0005,
    Aes = 0x0006,
    Mgf1 = 0x0007,
    KeyedHash = 0x0008,
    Xor = 0x000A,
    Sha256 = 0x000B,
    Sha384 = 0x000C,
    Sha512 = 0x000D,
    Null = 0x0010,
    Sm3_256 = 0x0012,
    Sm4 = 0x0013,
    RsaSsa = 0x0014,
    RsaEs = 0x0015,
    RsaPss = 0x0016,
    Oaep = 0x0017,
    EcDsa = 0x0018,
    EcDh = 0x0019,
    EcDaa = 0x001A,
    Sm2 = 0x001B,
    EcSchnorr = 0x001C,
    EcMqv = 0x001D,
    Kdf1Sp800_56A = 0x0020,
    Kdf2 = 0x0021,
    Kdf1Sp800_108 = 0x0022,
    Ecc = 0x0023,
    SymCipher = 0x0025,
    Camellia = 0x0026,
    Sha3_256 = 0x0027,
    Sha3_384 = 0x0028,
    Sha3_512 = 0x0029,
    Cmac = 0x003F,
    Ctr = 0x0040,
    Ofb = 0x0041,
    Cbc = 0x0042,
    Cfb = 0x0043,
    Ecb = 0x0044,
}

/// <summary>TPM_ECC_CURVE (Part 2, §6.4).</summary>
public enum TpmEccCurve : ushort
{
    None = 0x0000,
    NistP192 = 0x0001,
    NistP224 = 0x0002,
    NistP256 = 0x0003,
    NistP384 = 0x0004,
    NistP521 = 0x0005,
    BnP256 = 0x0010,
    BnP638 = 0x0011,
    Sm2P256 = 0x0020,
}

/// <summary>TPM_CC command codes (Part 2, §6.5.2).</summary>
public enum TpmCc : uint
{
    NvUndefineSpaceSpecial = 0x11F,
    EvictControl = 0x120,
    HierarchyControl = 0x121,
    NvUndefineSpace = 0x122,
    Clear = 0x126,
    HierarchyChangeAuth = 0x129,
    NvDefineSpace = 0x12A,
    CreatePrimary = 0x131,
    NvIncrement = 0x134,
    NvSetBits = 0x135,
    NvExtend = 0x136,
    NvWrite = 0x137,
    NvWriteLock = 0x138,
    DictionaryAttackLockReset = 0x139,
    PcrEvent = 0x13C,
    PcrReset = 0x13D,
    SelfTest = 0x143,
    Startup = 0x144,
    Shutdown = 0x145,
    StirRandom = 0x146,
    ActivateCredential = 0x147,
    Certify = 0x148,
    PolicyNv = 0x149,
    CertifyCreation = 0x14A,
    Duplicate = 0x14B,
    GetTime = 0x14C,
    GetSessionAuditDigest = 0x14D,
    NvRead = 0x14E,
    NvReadLock = 0x14F,
    ObjectChangeAuth = 0x150,
    PolicySecret = 0x151,
    Rewrap = 0x152,
    Create = 0x153,
    EcdhZGen = 0x154,
    Hmac = 0x155,
    Import = 0x156,
    Load = 0x157,
    Quote = 0x158,
    RsaDecrypt = 0x159,
    SequenceUpdate = 0x15C,
    Sign = 0x15D,
    Unseal = 0x15E,
    PolicySigned = 0x160,
    ContextLoad = 0x161,
    ContextSave = 0x162,
    EcdhKeyGen = 0x163,
    EncryptDecrypt = 0x164,
    FlushContext = 0x165,
    LoadExternal = 0x167,
    MakeCredential = 0x168,
    NvReadPublic = 0x169,
    PolicyAuthorize = 0x16A,
    PolicyAuthValue = 0x16B,
    PolicyCommandCode = 0x16C,
    PolicyCounterTimer = 0x16D,
    PolicyCpHash = 0x16E,
    PolicyLocality = 0x16F,
    PolicyNameHash = 0x170,
    PolicyOr = 0x171,
    PolicyTicket = 0x172,
    ReadPublic = 0x173,
    RsaEncrypt = 0x174,
    StartAuthSession = 0x176,
    VerifySignature = 0x177,
    EccParameters = 0x178,
    GetCapability = 0x17A,
    GetRandom = 0x17B,
    GetTestResult = 0x17C,
    Hash = 0x17D,
    PcrRead = 0x17E,
    PolicyPcr = 0x17F,
    PolicyRestart = 0x180,
    ReadClock = 0x181,
    PcrExtend = 0x182,
    NvCertify = 0x184,
    EventSequenceComplete = 0x185,
    HashSequenceStart = 0x186,
    PolicyGetDigest = 0x189,
    PolicyPassword = 0x18C,
    PolicyDuplicationSelect = 0x188,
    CreateLoaded = 0x191,
}

/// <summary>TPM_ST structure tags (Part 2, §6.9).</summary>
public enum TpmSt : ushort
{
    RspCommand = 0x00C4,
    Null = 0x8000,
    NoSessions = 0x8001,
    Sessions = 0x8002,
    AttestNv = 0x8014,
    AttestCommandAudit = 0x8015,
    AttestSessionAudit = 0x8016,
    AttestCertify = 0x8017,
    AttestQuote = 0x8018,
    AttestTime = 0x8019,
    AttestCreation = 0x801A,
    AttestNvDigest = 0x801C,
    Creation = 0x8021,
    Verified = 0x8022,
    AuthSecret = 0x8023,
    HashCheck = 0x8024,
    AuthSigned = 0x8025,
}

/// <summary>TPM_SU startup types (Part 2, §6.11).</summary>
public enum TpmSu : ushort
{
    Clear = 0x0000,
    State = 0x0001,
}

/// <summary>TPM_SE session types (Part 2, §6.12).</summary>
public enum TpmSe : byte
{
    Hmac = 0x00,
    Policy = 0x01,
    Trial = 0x03,
}

/// <summary>TPM_CAP capabilities (Part 2, §6.12).</summary>
public enum TpmCap : uint
{
    Algs = 0x0,
    Handles = 0x1,
    Commands = 0x2,
    PpCommands = 0x3,
    AuditCommands = 0x4,
    Pcrs = 0x5,
    TpmProperties = 0x6,
    PcrProperties = 0x7,
    EccCurves = 0x8,
}

/// <summary>TPM_PT properties (Part 2, §6.13).</summary>
public enum TpmPt : uint
{
    FamilyIndicator = 0x100,
    Level = 0x101,
    Revision = 0x102,
    DayOfYear = 0x103,
    Year = 0x104,
    Manufacturer = 0x105,
    VendorString1 = 0x106,
    VendorString2 = 0x107,
    VendorString3 = 0x108,
    VendorString4 = 0x109,
    VendorTpmType = 0x10A,
    FirmwareVersion1 = 0x10B,
    FirmwareVersion2 = 0x10C,
    InputBuffer = 0x10D,
    PcrCount = 0x112,
    MaxCommandSize = 0x11E,
    MaxResponseSize = 0x11F,
    MaxDigest = 0x120,
    NvBufferMax = 0x12C,
}

/// <summary>Reserved and well-known handles (Part 2, §7.4 TPM_RH, §7.3 TPM_HT).</summary>
public static class TpmRh
{
    public const uint Owner = 0x40000001;
    public const uint Null = 0x40000007;
    public const uint Password = 0x40000009;
    public const uint Lockout = 0x4000000A;
    public const uint Endorsement = 0x4000000B;
    public const uint Platform = 0x4000000C;

    /// <summary>Top byte of a handle: its type (TPM_HT, Part 2 §7.2).</summary>
    public static byte HandleType(uint handle) => (byte)(handle >> 24);

    public const byte HtPcr = 0x00;
    public const byte HtNvIndex = 0x01;
    public const byte HtHmacSession = 0x02;
    public const byte HtPolicySession = 0x03;
    public const byte HtPermanent = 0x40;
    public const byte HtTransient = 0x80;
    public const byte HtPersistent = 0x81;
}

/// <summary>TPMA_OBJECT (Part 2, §8.3).</summary>
[Flags]
public enum TpmaObject : uint
{
    None = 0,
    FixedTpm = 1u << 1,
    StClear = 1u << 2,
    FixedParent = 1u << 4,
    SensitiveDataOrigin = 1u << 5,
    UserWithAuth = 1u << 6,
    AdminWithPolicy = 1u << 7,
    NoDa = 1u << 10,
    EncryptedDuplication = 1u << 11,
    Restricted = 1u << 16,
    Decrypt = 1u << 17,
    Sign = 1u << 18,
    X509Sign = 1u << 19,
}

/// <summary>TPMA_SESSION (Part 2, §8.4).</summary>
[Flags]
public enum TpmaSession : byte
{
    None = 0,
    ContinueSession = 1 << 0,
    AuditExclusive = 1 << 1,
    AuditReset = 1 << 2,
    Decrypt = 1 << 5,
    Encrypt = 1 << 6,
    Audit = 1 << 7,
}

/// <summary>TPMA_NV (Part 2, §13.4).</summary>
[Flags]
public enum TpmaNv : uint
{
    None = 0,
    PpWrite = 1u << 0,
    OwnerWrite = 1u << 1,
    AuthWrite = 1u << 2,
    PolicyWrite = 1u << 3,
    PolicyDelete = 1u << 10,
    WriteLocked = 1u << 11,
    WriteAll = 1u << 12,
    WriteDefine = 1u << 13,
    WriteStClear = 1u << 14,
    GlobalLock = 1u << 15,
    PpRead = 1u << 16,
    OwnerRead = 1u << 17,
    AuthRead = 1u << 18,
    PolicyRead = 1u << 19,
    NoDa = 1u << 25,
    Orderly = 1u << 26,
    ClearStClear = 1u << 27,
    ReadLocked = 1u << 28,
    Written = 1u << 29,
    PlatformCreate = 1u << 30,
    ReadStClear = 1u << 31,
}

/// <summary>Miscellaneous constants.</summary>
public static class TpmConstants
{
    /// <summary>TPM_GENERATED_VALUE (Part 2, §6.2): 0xff 'T' 'C' 'G'.</summary>
    public const uint Generated = 0xFF544347;

    /// <summary>
    /// Smallest PCR selection bitmap (Part 2 §10.6.2, sizeofSelect {PCR_SELECT_MIN:}, TPM_RC_VALUE below it):
    /// PCR_SELECT_MIN = (PLATFORM_PCR + 7) / 8 with the PC Client's 24 PCRs.
    /// </summary>
    public const int PcrSelectMin = 3;

    /// <summary>Largest PCR selection bitmap we accept (Part 2, PCR_SELECT_MAX for 24+ PCRs).</summary>
    public const int PcrSelectMax = 4;

    /// <summary>Largest digest we accept (SHA-512).</summary>
    public const int MaxDigestSize = 64;

    /// <summary>TPM NV index of the RSA-2048 EK certificate (TCG EK Credential Profile §2.2.1.4).</summary>
    public const uint NvRsaEkCert = 0x01C00002;

    /// <summary>TPM NV index of the ECC NIST P-256 EK certificate.</summary>
    public const uint NvEccEkCert = 0x01C0000A;
}

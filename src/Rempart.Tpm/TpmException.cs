namespace Rempart.Tpm;

/// <summary>
/// A TPM response code other than TPM_RC_SUCCESS (Part 2, §6.6). Format-one codes are
/// decoded into the error number and the handle, parameter or session they blame, so
/// callers match on <see cref="Canonical"/> (e.g. <see cref="TpmRc.PolicyFail"/>) whatever
/// position the TPM reported.
/// </summary>
public sealed class TpmException : Exception
{
    public TpmException(TpmCc command, uint responseCode)
        : base(Describe(command, responseCode))
    {
        Command = command;
        ResponseCode = responseCode;
        Decode(responseCode, out var canonical, out var kind, out var index);
        Canonical = canonical;
        Subject = kind;
        SubjectIndex = index;
    }

    public TpmCc Command { get; }

    /// <summary>The raw response code as the TPM sent it.</summary>
    public uint ResponseCode { get; }

    /// <summary>The code without its handle/parameter/session position.</summary>
    public uint Canonical { get; }

    /// <summary>What the code blames: "parameter", "handle", "session", or "" when none.</summary>
    public string Subject { get; }

    /// <summary>1-based index of the blamed handle, parameter or session; 0 when none.</summary>
    public int SubjectIndex { get; }

    public bool Is(uint canonical) => Canonical == canonical;

    /// <summary>Splits a response code into canonical code and position (Part 2, §6.6.3).</summary>
    public static void Decode(uint rc, out uint canonical, out string subject, out int index)
    {
        subject = "";
        index = 0;
        if ((rc & TpmRc.Fmt1) != 0)
        {
            canonical = TpmRc.Fmt1 | (rc & 0x3F);
            int n = (int)((rc >> 8) & 0xF);
            if ((rc & 0x40) != 0)
            {
                subject = "parameter";
                index = n;
            }
            else if ((n & 0x8) != 0)
            {
                subject = "session";
                index = n & 0x7;
            }
            else if (n != 0)
            {
                subject = "handle";
                index = n;
            }
        }
        else
        {
            canonical = rc & 0xFFF;
        }
    }

    public static string Describe(TpmCc command, uint rc)
    {
        Decode(rc, out var canonical, out var subject, out var index);
        string name = TpmRc.Name(canonical);
        string where = subject.Length == 0 ? "" : $" ({subject} {index})";
        return $"TPM2_{command} failed: {name}{where}, response code 0x{rc:x3}";
    }
}

/// <summary>Well-known TPM_RC values (Part 2, §6.6), canonical form.</summary>
public static class TpmRc
{
    public const uint Success = 0x000;
    public const uint Ver1 = 0x100;
    public const uint Fmt1 = 0x080;
    public const uint Warn = 0x900;

    public const uint Initialize = Ver1 + 0x000;
    public const uint Failure = Ver1 + 0x001;
    public const uint Sequence = Ver1 + 0x003;
    public const uint Disabled = Ver1 + 0x020;
    public const uint Exclusive = Ver1 + 0x021;
    public const uint AuthType = Ver1 + 0x024;
    public const uint AuthMissing = Ver1 + 0x025;
    public const uint Policy = Ver1 + 0x026;
    public const uint Pcr = Ver1 + 0x027;
    public const uint PcrChanged = Ver1 + 0x028;
    public const uint Upgrade = Ver1 + 0x02D;
    public const uint TooManyContexts = Ver1 + 0x02E;
    public const uint AuthUnavailable = Ver1 + 0x02F;
    public const uint Reboot = Ver1 + 0x030;
    public const uint UnbalancedSize = Ver1 + 0x031;
    public const uint CommandSize = Ver1 + 0x042;
    public const uint CommandCode = Ver1 + 0x043;
    public const uint AuthSize = Ver1 + 0x044;
    public const uint AuthContext = Ver1 + 0x045;
    public const uint NvRange = Ver1 + 0x046;
    public const uint NvSize = Ver1 + 0x047;
    public const uint NvLocked = Ver1 + 0x048;
    public const uint NvAuthorization = Ver1 + 0x049;
    public const uint NvUninitialized = Ver1 + 0x04A;
    public const uint NvSpace = Ver1 + 0x04B;
    public const uint NvDefined = Ver1 + 0x04C;
    public const uint BadContext = Ver1 + 0x050;
    public const uint CpHash = Ver1 + 0x051;
    public const uint Parent = Ver1 + 0x052;
    public const uint NeedsTest = Ver1 + 0x053;
    public const uint NoResult = Ver1 + 0x054;
    public const uint Sensitive = Ver1 + 0x055;

    public const uint Asymmetric = Fmt1 + 0x001;
    public const uint Attributes = Fmt1 + 0x002;
    public const uint Hash = Fmt1 + 0x003;
    public const uint Value = Fmt1 + 0x004;
    public const uint Hierarchy = Fmt1 + 0x005;
    public const uint KeySize = Fmt1 + 0x007;
    public const uint Mgf = Fmt1 + 0x008;
    public const uint Mode = Fmt1 + 0x009;
    public const uint Type = Fmt1 + 0x00A;
    public const uint Handle = Fmt1 + 0x00B;
    public const uint Kdf = Fmt1 + 0x00C;
    public const uint Range = Fmt1 + 0x00D;
    public const uint AuthFail = Fmt1 + 0x00E;
    public const uint Nonce = Fmt1 + 0x00F;
    public const uint Pp = Fmt1 + 0x010;
    public const uint Scheme = Fmt1 + 0x012;
    public const uint Size = Fmt1 + 0x015;
    public const uint Symmetric = Fmt1 + 0x016;
    public const uint Tag = Fmt1 + 0x017;
    public const uint Selector = Fmt1 + 0x018;
    public const uint Insufficient = Fmt1 + 0x01A;
    public const uint Signature = Fmt1 + 0x01B;
    public const uint Key = Fmt1 + 0x01C;
    public const uint PolicyFail = Fmt1 + 0x01D;
    public const uint Integrity = Fmt1 + 0x01F;
    public const uint Ticket = Fmt1 + 0x020;
    public const uint ReservedBits = Fmt1 + 0x021;
    public const uint BadAuth = Fmt1 + 0x022;
    public const uint Expired = Fmt1 + 0x023;
    public const uint PolicyCc = Fmt1 + 0x024;
    public const uint Binding = Fmt1 + 0x025;
    public const uint Curve = Fmt1 + 0x026;
    public const uint EccPoint = Fmt1 + 0x027;

    public const uint ContextGap = Warn + 0x001;
    public const uint ObjectMemory = Warn + 0x002;
    public const uint SessionMemory = Warn + 0x003;
    public const uint Memory = Warn + 0x004;
    public const uint SessionHandles = Warn + 0x005;
    public const uint ObjectHandles = Warn + 0x006;
    public const uint Locality = Warn + 0x007;
    public const uint Yielded = Warn + 0x008;
    public const uint Canceled = Warn + 0x009;
    public const uint Testing = Warn + 0x00A;
    public const uint Retry = Warn + 0x022;
    public const uint NvRate = Warn + 0x020;
    public const uint Lockout = Warn + 0x021;
    public const uint NvUnavailable = Warn + 0x023;

    private static readonly Dictionary<uint, string> Names = typeof(TpmRc)
        .GetFields()
        .Where(f => f.IsLiteral && f.Name is not ("Ver1" or "Fmt1" or "Warn" or "Success"))
        .ToDictionary(f => (uint)f.GetRawConstantValue()!, f => "TPM_RC_" + ToUpperSnake(f.Name));

    public static string Name(uint canonical) =>
        Names.TryGetValue(canonical, out var n) ? n : $"TPM_RC 0x{canonical:x3}";

    private static string ToUpperSnake(string s) =>
        string.Concat(s.Select((c, i) => i > 0 && char.IsUpper(c) ? "_" + c : char.ToUpperInvariant(c).ToString()));
}

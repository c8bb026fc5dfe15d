using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>
/// The typed value of a measured UEFI variable, chosen by vendor GUID and name (never by name
/// alone: "db" means the signature database only under EFI_IMAGE_SECURITY_DATABASE_GUID).
/// </summary>
public abstract partial record UefiVariableValue
{
    public abstract JsonObject ToJson();

    public abstract string Describe();

    private static readonly HashSet<string> GlobalBooleans = ["SecureBoot", "SetupMode", "AuditMode", "DeployedMode"];
    private static readonly HashSet<string> GlobalDatabases = ["PK", "KEK"];
    private static readonly HashSet<string> SecurityDatabases = ["db", "dbx", "dbt", "dbr"];

    /// <summary>Boot#### with #### upper-case hexadecimal (UEFI 2.10 §3.1.1).</summary>
    [GeneratedRegex(@"\ABoot[0-9A-F]{4}\z")]
    private static partial Regex BootOption();

    /// <summary>
    /// Values of EV_EFI_VARIABLE_DRIVER_CONFIG and EV_EFI_VARIABLE_BOOT(2) data: the Secure Boot
    /// booleans (UEFI 2.10 §3.3, one byte; empty data when the variable is absent), PK/KEK/db/dbx
    /// signature databases (§32.4.1, PFP §3.3.4.8), BootOrder (§3.3, UINT16[]) and Boot#### (§3.1.3).
    /// </summary>
    internal static UefiVariableValue? Read(Guid vendor, string name, ref LeReader r)
    {
        if (vendor == UefiGuids.GlobalVariable && GlobalBooleans.Contains(name))
        {
            return BooleanValue.Read(ref r, name);
        }
        if ((vendor == UefiGuids.GlobalVariable && GlobalDatabases.Contains(name))
            || (vendor == UefiGuids.ImageSecurityDatabase && SecurityDatabases.Contains(name)))
        {
            return new SignatureDatabaseValue(SignatureList.ReadAll(ref r));
        }
        if (vendor == UefiGuids.GlobalVariable && name == "BootOrder")
        {
            return BootOrderValue.Read(ref r);
        }
        if (vendor == UefiGuids.GlobalVariable && BootOption().IsMatch(name))
        {
            return LoadOptionValue.Read(ref r);
        }
        return null;
    }

    /// <summary>
    /// Values of EV_EFI_VARIABLE_AUTHORITY data (PFP §3.3.4.8, §10.4.1): the EFI_SIGNATURE_DATA
    /// entry that authorized an image, which firmware logs under db and shim under Shim, MokList,
    /// vendor_db; and shim's SbatLevel (text) and MokListTrusted (one byte).
    /// </summary>
    internal static UefiVariableValue ReadAuthority(Guid vendor, string name, ref LeReader r)
    {
        if (vendor == UefiGuids.ShimLock && name == "SbatLevel")
        {
            long at = r.Offset;
            if (!DecodingText.TryUtf8(r.Take(r.Remaining, "SbatLevel").Span, out var text))
            {
                throw new EventLogFormatException(at, "SbatLevel as UTF-8 text");
            }
            return new TextValue(text);
        }
        if (vendor == UefiGuids.ShimLock && name == "MokListTrusted")
        {
            return BooleanValue.Read(ref r, name);
        }
        return AuthorityValue.Read(ref r);
    }
}

/// <summary>A one-byte boolean variable (SecureBoot, SetupMode, ..., MokListTrusted); <see cref="Raw"/> is null when the data is empty.</summary>
public sealed record BooleanValue(byte? Raw) : UefiVariableValue
{
    /// <summary>True when the byte is 1 (UEFI 2.10 §3.3: 1 enabled, 0 disabled; an absent variable is disabled).</summary>
    public bool Enabled => Raw == 1;

    public override JsonObject ToJson() => new() { ["kind"] = "boolean", ["enabled"] = Enabled, ["raw"] = Raw };

    public override string Describe() => Raw is { } b ? $"{b} ({(Enabled ? "enabled" : "disabled")})" : "(empty: disabled)";

    internal static BooleanValue Read(ref LeReader r, string name)
    {
        if (r.Remaining > 1)
        {
            throw r.Error($"a 1-byte {name} value (got {r.Remaining} bytes)");
        }
        return new BooleanValue(r.AtEnd ? null : r.U8(name));
    }
}

/// <summary>A signature database (PK, KEK, db, dbx): its EFI_SIGNATURE_LISTs in order.</summary>
public sealed record SignatureDatabaseValue(IReadOnlyList<SignatureList> Lists) : UefiVariableValue
{
    public IEnumerable<SignatureEntry> Entries => Lists.SelectMany(l => l.Signatures);

    public IEnumerable<CertificateSummary> Certificates => Entries.Select(e => e.Certificate).OfType<CertificateSummary>();

    public override JsonObject ToJson() => new()
    {
        ["kind"] = "signature-database",
        ["lists"] = new JsonArray([.. Lists.Select(l => (JsonNode)l.ToJson())]),
    };

    public override string Describe()
    {
        int certs = Certificates.Count();
        int hashes = Lists.Where(l => l.SignatureType == UefiGuids.CertSha256).Sum(l => l.Signatures.Count);
        int others = Entries.Count() - certs - hashes;
        var first = Certificates.FirstOrDefault();
        string subject = first is null ? "" : $", first {DecodingText.Quote(first.Subject)}";
        return $"{Lists.Count} signature lists: {certs} certificates, {hashes} SHA-256 hashes{(others > 0 ? $", {others} other" : "")}{subject}";
    }
}

/// <summary>BootOrder (UEFI 2.10 §3.3): the Boot#### numbers in order.</summary>
public sealed record BootOrderValue(IReadOnlyList<ushort> Order) : UefiVariableValue
{
    public override JsonObject ToJson() => new()
    {
        ["kind"] = "boot-order",
        ["order"] = new JsonArray([.. Order.Select(n => (JsonNode)$"Boot{n:X4}")]),
    };

    public override string Describe() => string.Join(',', Order.Select(n => $"Boot{n:X4}"));

    internal static BootOrderValue Read(ref LeReader r)
    {
        if (r.Remaining % 2 != 0)
        {
            throw r.Error($"a BootOrder of UINT16 entries (an even length, got {r.Remaining} bytes)");
        }
        var order = new List<ushort>(r.Remaining / 2);
        while (!r.AtEnd)
        {
            order.Add(r.U16("BootOrder entry"));
        }
        return new BootOrderValue(order);
    }
}

/// <summary>shim's SbatLevel: the SBAT revocation CSV text.</summary>
public sealed record TextValue(string Text) : UefiVariableValue
{
    public override JsonObject ToJson() => new() { ["kind"] = "text", ["text"] = Text };

    public override string Describe() => DecodingText.Quote(Text);
}

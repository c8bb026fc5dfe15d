using System.Text;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>
/// UEFI device paths (UEFI 2.10 §10.2 EFI_DEVICE_PATH_PROTOCOL, node layouts §10.3) as text, in
/// the DevicePathToText form of UEFI 2.10 §10.6 as EDK2's UefiDevicePathLib prints it with
/// DisplayOnly = FALSE and AllowShortcuts = FALSE (nothing dropped): nodes joined by '/',
/// instances by ',', numbers in EDK2's lower-case hex (<c>Pci(0x1f,0x2)</c>, <c>Sata(0x1,0xffff,0x0)</c>),
/// GUIDs lower-case, a known type with an unknown subtype as
/// <c>HardwarePath(sub,hex)</c>/<c>AcpiPath</c>/<c>Msg</c>/<c>MediaPath</c>/<c>BbsPath</c> and an unknown
/// type as <c>Path(type,sub,hex)</c>. libefivar (what tpm2_eventlog uses) prints some nodes
/// differently (decimal <c>Sata(1,65535,0)</c>, <c>SCSI(1,0)</c>, <c>FvVol(...)</c> for EDK2's
/// <c>Fv(...)</c>, <c>USB(11,0)</c>, protocol numbers in IPv4); the nodes and values are the same.
/// <para>
/// Every node is length-checked (UEFI 2.10 §10.2: Length counts the 4-byte header, so at least 4,
/// and at most what remains) and a node's fields are read from within its own length only. Bytes a
/// node declares beyond the fields its subtype defines are ignored, as EDK2 does (nodes grow
/// between UEFI versions, e.g. IPv4 from 19 to 27 bytes).
/// </para>
/// </summary>
public static partial class DevicePathText
{
    /// <summary>Formats a device path that occupies exactly <paramref name="path"/> (may be empty: "").</summary>
    public static bool TryFormat(ReadOnlyMemory<byte> path, out string text, out string? error)
    {
        try
        {
            var r = new LeReader(path);
            text = ReadPaths(ref r, "device path", out _);
            error = null;
            return true;
        }
        catch (EventLogFormatException e)
        {
            text = "";
            error = $"at offset {e.Offset}: expected {e.Expected}";
            return false;
        }
    }

    /// <summary>
    /// Reads device paths to the end of <paramref name="r"/>: one path (possibly of several
    /// instances) ending with End Entire, then any further such paths (EFI_LOAD_OPTION.FilePathList
    /// holds several, UEFI 2.10 §3.1.3). Returns the first path's text and the others in <paramref name="more"/>.
    /// </summary>
    internal static string ReadPaths(ref LeReader r, string what, out IReadOnlyList<string> more)
    {
        var extra = new List<string>();
        string first = r.AtEnd ? "" : ReadPath(ref r, what);
        while (!r.AtEnd)
        {
            extra.Add(ReadPath(ref r, what));
        }
        more = extra;
        return first;
    }

    /// <summary>Reads one device path through its End Entire node (type 0x7F, subtype 0xFF).</summary>
    internal static string ReadPath(ref LeReader r, string what)
    {
        var sb = new StringBuilder();
        while (true)
        {
            if (r.AtEnd)
            {
                throw r.Error($"an End Entire Device Path node (0x7F,0xFF) to end the {what}");
            }
            long at = r.Offset;
            byte type = r.U8($"{what} node type");
            byte sub = r.U8($"{what} node subtype");
            ushort length = r.U16($"{what} node length");
            if (length < 4)
            {
                throw new EventLogFormatException(at + 2, $"a {what} node length of at least 4 (got {length})");
            }
            var body = r.Take(length - 4, $"{what} node ({type},{sub}) of length {length}");
            if (type == EndType && sub == EndEntire)
            {
                return sb.ToString();
            }
            if (type == EndType && sub == EndInstance)
            {
                sb.Append(',');
                continue;
            }
            if (sb.Length > 0 && sb[^1] != ',')
            {
                sb.Append('/');
            }
            var node = r.Sub(body, at + 4);
            sb.Append(Node(type, sub, ref node, body.Span));
        }
    }

    private const byte HardwareType = 0x01;
    private const byte AcpiType = 0x02;
    private const byte MessagingType = 0x03;
    private const byte MediaType = 0x04;
    private const byte BbsType = 0x05;
    private const byte EndType = 0x7F;
    private const byte EndInstance = 0x01;
    private const byte EndEntire = 0xFF;

    private static string Node(byte type, byte sub, ref LeReader n, ReadOnlySpan<byte> body) => type switch
    {
        HardwareType => Hardware(sub, ref n, body),
        AcpiType => Acpi(sub, ref n, body),
        MessagingType => Messaging(sub, ref n, body),
        MediaType => Media(sub, ref n, body),
        BbsType => Bbs(sub, ref n, body),
        _ => $"Path({type},{sub}{HexArg(body)})",
    };

    /// <summary>Hardware device paths (UEFI 2.10 §10.3.2).</summary>
    private static string Hardware(byte sub, ref LeReader n, ReadOnlySpan<byte> body)
    {
        switch (sub)
        {
            case 1:
                byte function = n.U8("PCI Function");
                return $"Pci({X(n.U8("PCI Device"))},{X(function)})";
            case 2:
                return $"PcCard({X(n.U8("PC Card FunctionNumber"))})";
            case 3:
                return $"MemoryMapped({X(n.U32("MemoryType"))},{X(n.U64("StartingAddress"))},{X(n.U64("EndingAddress"))})";
            case 4:
                return Vendor("VenHw", ref n);
            case 5:
                return $"Ctrl({X(n.U32("ControllerNumber"))})";
            case 6:
                byte interfaceType = n.U8("BMC InterfaceType");
                return $"BMC({X(interfaceType)},{X(n.U64("BMC BaseAddress"))})";
            default:
                return $"HardwarePath({sub}{HexArg(body)})";
        }
    }

    /// <summary>ACPI device paths (UEFI 2.10 §10.3.3); PNP EISA ids as EDK2 names them.</summary>
    private static string Acpi(byte sub, ref LeReader n, ReadOnlySpan<byte> body)
    {
        switch (sub)
        {
            case 1:
                uint hid = n.U32("ACPI _HID");
                uint uid = n.U32("ACPI _UID");
                if ((hid & 0xFFFF) != 0x41D0)
                {
                    return $"Acpi(0x{hid:x8},{X(uid)})";
                }
                return (hid >> 16) switch
                {
                    0x0A03 => $"PciRoot({X(uid)})",
                    0x0A08 => $"PcieRoot({X(uid)})",
                    0x0604 => $"Floppy({X(uid)})",
                    0x0301 => $"Keyboard({X(uid)})",
                    0x0501 => $"Serial({X(uid)})",
                    0x0401 => $"ParallelPort({X(uid)})",
                    var num => $"Acpi(PNP{num:x4},{X(uid)})",
                };
            case 2:
                return AcpiExtended(ref n);
            case 3:
                var adr = new StringBuilder($"AcpiAdr({X(n.U32("ACPI _ADR"))}");
                while (n.Remaining >= 4)
                {
                    adr.Append(',').Append(X(n.U32("additional _ADR")));
                }
                return adr.Append(')').ToString();
            default:
                return $"AcpiPath({sub}{HexArg(body)})";
        }
    }

    private static string AcpiExtended(ref LeReader n)
    {
        uint hid = n.U32("ACPI _HID");
        uint uid = n.U32("ACPI _UID");
        uint cid = n.U32("ACPI _CID");
        string hidStr = AsciiZ(ref n);
        string uidStr = AsciiZ(ref n);
        string cidStr = AsciiZ(ref n);
        return hidStr.Length == 0 && cidStr.Length == 0 && uid == 0
            ? $"AcpiExp({EisaId(hid)},{EisaId(cid)},{uidStr})"
            : $"AcpiEx({EisaId(hid)},{EisaId(cid)},{X(uid)},{hidStr},{cidStr},{uidStr})";
    }

    /// <summary>BIOS Boot Specification device path (UEFI 2.10 §10.3.7).</summary>
    private static string Bbs(byte sub, ref LeReader n, ReadOnlySpan<byte> body)
    {
        if (sub != 1)
        {
            return $"BbsPath({sub}{HexArg(body)})";
        }
        ushort deviceType = n.U16("BBS DeviceType");
        ushort status = n.U16("BBS StatusFlag");
        string description = AsciiZ(ref n);
        string typeText = deviceType switch
        {
            1 => "Floppy",
            2 => "HD",
            3 => "CDROM",
            4 => "PCMCIA",
            5 => "USB",
            6 => "Network",
            _ => X(deviceType),
        };
        return $"BBS({typeText},{description},{X(status)})";
    }

    /// <summary>Vendor-defined node (hardware, messaging, media): GUID then vendor data as hex.</summary>
    private static string Vendor(string label, ref LeReader n)
    {
        var guid = n.Guid($"{label} vendor GUID");
        var data = n.Take(n.Remaining, $"{label} vendor data").Span;
        return $"{label}({DecodingText.Guid(guid)}{HexArg(data)})";
    }

    /// <summary>The rest of a node as an ASCII string up to its NUL (or the node's end).</summary>
    private static string AsciiZ(ref LeReader n)
    {
        var rest = n.Rest;
        int nul = rest.IndexOf((byte)0);
        var s = DecodingText.AsciiUntilNul(rest);
        n.Take(nul < 0 ? rest.Length : nul + 1, "string");
        return s;
    }

    /// <summary>An EISA id as "PNP0A03" (EDK2's %c%c%c%04X).</summary>
    private static string EisaId(uint id) => string.Concat(
        (char)(((id >> 10) & 0x1F) + 'A' - 1),
        (char)(((id >> 5) & 0x1F) + 'A' - 1),
        (char)((id & 0x1F) + 'A' - 1),
        ((id >> 16) & 0xFFFF).ToString("X4"));

    private static string X(ulong v) => $"0x{v:x}";

    private static string Hex(ReadOnlySpan<byte> b) => Convert.ToHexStringLower(b);

    private static string HexArg(ReadOnlySpan<byte> b) => b.IsEmpty ? "" : "," + Hex(b);
}

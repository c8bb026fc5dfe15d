using System.Text.Json.Nodes;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>What an EV_IPL string is, by the conventions of the boot loaders that log them.</summary>
public enum IplKind
{
    /// <summary>GRUB (PCR 8): "grub_cmd: " and the command it ran.</summary>
    GrubCommand,

    /// <summary>GRUB (PCR 8): "kernel_cmdline: " and the kernel command line.</summary>
    KernelCmdline,

    /// <summary>GRUB (PCR 8): "module_cmdline: " and a module's command line.</summary>
    ModuleCmdline,

    /// <summary>Any other ASCII/UTF-8 string: GRUB's file paths (PCR 9), shim's "MokList" names (PCR 14).</summary>
    Text,

    /// <summary>A UTF-16LE string: systemd-boot and systemd-stub (kernel command line, PCR 12).</summary>
    Utf16Text,
}

/// <summary>
/// EV_IPL data (PFP v1.05 §10.4.1: the event data is defined by the IPL): the string a boot loader
/// logged, with its trailing NULs removed. <see cref="Value"/> is the text after the GRUB prefix
/// ("grub_cmd: " ...), or the whole text for the other kinds.
/// </summary>
public sealed record IplEvent(IplKind IplKind, string Text) : DecodedEventData
{
    private static readonly (string Prefix, IplKind Kind)[] GrubPrefixes =
    [
        ("grub_cmd: ", IplKind.GrubCommand),
        ("kernel_cmdline: ", IplKind.KernelCmdline),
        ("module_cmdline: ", IplKind.ModuleCmdline),
    ];

    public override string Kind => "ipl";

    public string Value => GrubPrefixes.FirstOrDefault(p => p.Kind == IplKind).Prefix is { } prefix && Text.StartsWith(prefix, StringComparison.Ordinal)
        ? Text[prefix.Length..]
        : Text;

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["iplKind"] = IplKind.ToString();
        o["text"] = Text;
        o["value"] = Value;
        return o;
    }

    protected override string Summary() => $"{IplKind}: {DecodingText.Quote(Text)}";

    /// <summary>The string, or null when the data is not text in either encoding.</summary>
    internal static IplEvent? TryRead(ReadOnlySpan<byte> data)
    {
        // UTF-16LE when the first character is ASCII in UTF-16 (a zero high byte), as
        // systemd-boot logs; GRUB's strings never have a NUL as their second byte.
        var utf16 = DecodingQuirks.TrimOddUtf16Nul(data);
        if (utf16.Length >= 2 && utf16[0] != 0 && utf16[1] == 0 && DecodingText.TryUtf16(utf16, out var wide))
        {
            return new IplEvent(IplKind.Utf16Text, wide);
        }
        if (!DecodingText.TryUtf8(data, out var text))
        {
            return null;
        }
        foreach (var (prefix, kind) in GrubPrefixes)
        {
            if (text.StartsWith(prefix, StringComparison.Ordinal))
            {
                return new IplEvent(kind, text);
            }
        }
        return new IplEvent(IplKind.Text, text);
    }
}

/// <summary>
/// TCG_PCClientTaggedEvent (EV_EVENT_TAG, PFP v1.05 §10.4.1; layout from the PC Client
/// Implementation Specification for Conventional BIOS 1.21 §11.3.2.1): taggedEventID, taggedEventDataSize
/// and the data. Linux's EFI stub tags the initrd (0x8F3B22EC, "Linux initrd") and its command line
/// (0x8F3B22ED, "LOADED_IMAGE::LoadOptions") in PCR 9; the event data then carries only that
/// description, the digest covering the loaded bytes. Windows boot manager tags (PCRs 12-14) carry
/// its own SIPA structures (wbcl.h) and are kept as bytes, named by id.
/// </summary>
public sealed record TaggedEvent(uint TaggedEventId, ReadOnlyMemory<byte> TaggedEventData) : DecodedEventData
{
    /// <summary>Linux EFI stub: the initrd it loaded (drivers/firmware/efi/libstub, INITRD_EVENT_TAG_ID).</summary>
    public const uint LinuxInitrd = 0x8F3B22EC;

    /// <summary>Linux EFI stub: the LoadOptions (kernel command line) it received (LOAD_OPTIONS_EVENT_TAG_ID).</summary>
    public const uint LinuxLoadOptions = 0x8F3B22ED;

    public override string Kind => "tagged-event";

    /// <summary>The name of a known tag id, or null.</summary>
    public string? TagName => TaggedEventId switch
    {
        LinuxInitrd => "Linux initrd",
        LinuxLoadOptions => "LOADED_IMAGE::LoadOptions",
        0x40010001 => "Windows SIPAEVENT_TRUSTBOUNDARY",
        0x40010002 => "Windows SIPAEVENT_ELAM_AGGREGATION",
        0x40010003 => "Windows SIPAEVENT_LOADEDMODULE_AGGREGATION",
        0x00060002 => "Windows SIPAEVENT_AUTHORITYPUBKEY",
        _ => null,
    };

    /// <summary>The data as text when it is ASCII (the Linux tags' descriptions), else null.</summary>
    public string? Text => DecodingText.TryAscii(TaggedEventData.Span, out var s) && s.Length > 0 ? s : null;

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["taggedEventId"] = $"0x{TaggedEventId:x8}";
        o["tagName"] = TagName;
        o["taggedEventDataSize"] = TaggedEventData.Length;
        o["taggedEventData"] = Convert.ToHexStringLower(TaggedEventData.Span);
        if (Text is { } t)
        {
            o["text"] = t;
        }
        return o;
    }

    protected override string Summary() =>
        $"tag 0x{TaggedEventId:x8}{(TagName is { } n ? $" ({n})" : "")}: " +
        (Text is { } t ? DecodingText.Quote(t) : $"{TaggedEventData.Length} bytes {DecodingText.HexPreview(TaggedEventData.Span)}");

    internal static TaggedEvent Read(ref LeReader r)
    {
        uint id = r.U32("taggedEventID");
        uint size = r.U32("taggedEventDataSize");
        var data = r.Take(size, $"taggedEventData of taggedEventDataSize {size}");
        if (!r.AtEnd)
        {
            throw r.Error($"no bytes after taggedEventData ({r.Remaining} remain)");
        }
        return new TaggedEvent(id, data);
    }
}

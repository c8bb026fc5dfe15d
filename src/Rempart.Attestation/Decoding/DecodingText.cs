using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.Unicode;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>
/// Text helpers for event data: strings in event logs are ASCII/UTF-8 (GRUB, EV_EFI_ACTION) or
/// UCS-2/UTF-16LE (UEFI, systemd-boot), with or without NUL terminators. Every helper works on a
/// span it was given and allocates at most the string it returns.
/// </summary>
internal static class DecodingText
{
    private const int PreviewBytes = 24;

    /// <summary>Printable: no control characters other than tab, line feed and carriage return.</summary>
    public static bool IsPrintable(char c) => c is '\t' or '\n' or '\r' || !(char.IsControl(c) || c == '\uFFFD');

    /// <summary>ASCII text with trailing NULs removed; false if any other byte is not printable ASCII.</summary>
    public static bool TryAscii(ReadOnlySpan<byte> data, out string text)
    {
        var trimmed = data.TrimEnd((byte)0);
        foreach (var b in trimmed)
        {
            if (b > 0x7E || !IsPrintable((char)b))
            {
                text = "";
                return false;
            }
        }
        text = Encoding.ASCII.GetString(trimmed);
        return true;
    }

    /// <summary>UTF-8 text with trailing NULs removed; false if invalid UTF-8 or not printable.</summary>
    public static bool TryUtf8(ReadOnlySpan<byte> data, out string text)
    {
        var trimmed = data.TrimEnd((byte)0);
        if (!Utf8.IsValid(trimmed))
        {
            text = "";
            return false;
        }
        text = Encoding.UTF8.GetString(trimmed);
        if (!AllPrintable(text))
        {
            text = "";
            return false;
        }
        return true;
    }

    /// <summary>
    /// UTF-16LE text with trailing NUL characters removed; false for an odd length, an embedded
    /// NUL, an unpaired surrogate or a control character.
    /// </summary>
    public static bool TryUtf16(ReadOnlySpan<byte> data, out string text)
    {
        text = "";
        if (data.Length % 2 != 0)
        {
            return false;
        }
        int end = data.Length;
        while (end >= 2 && data[end - 1] == 0 && data[end - 2] == 0)
        {
            end -= 2;
        }
        var s = Encoding.Unicode.GetString(data[..end]);
        if (s.Contains('\0') || !AllPrintable(s) || HasLoneSurrogate(s))
        {
            return false;
        }
        text = s;
        return true;
    }

    /// <summary>A UTF-16LE string up to (not including) its first NUL character, or the whole span without one.</summary>
    public static string Utf16UntilNul(ReadOnlySpan<byte> data)
    {
        int chars = data.Length / 2;
        for (int i = 0; i < chars; i++)
        {
            if (BinaryPrimitives.ReadUInt16LittleEndian(data[(2 * i)..]) == 0)
            {
                return Encoding.Unicode.GetString(data[..(2 * i)]);
            }
        }
        return Encoding.Unicode.GetString(data[..(2 * chars)]);
    }

    /// <summary>An ASCII string up to its first NUL (or the whole span), non-ASCII bytes as '?'.</summary>
    public static string AsciiUntilNul(ReadOnlySpan<byte> data)
    {
        int nul = data.IndexOf((byte)0);
        return Encoding.ASCII.GetString(nul < 0 ? data : data[..nul]);
    }

    /// <summary>
    /// Reads a NUL-terminated UTF-16 string (UEFI CHAR16*) and its terminator; the bytes must hold
    /// the terminator. Returns the string without it.
    /// </summary>
    public static string ReadUtf16Z(ref LeReader r, string what)
    {
        var rest = r.Rest;
        for (int i = 0; i + 1 < rest.Length; i += 2)
        {
            if (rest[i] == 0 && rest[i + 1] == 0)
            {
                var s = Encoding.Unicode.GetString(r.Take(i, what).Span);
                r.Take(2, what + " NUL terminator");
                return s;
            }
        }
        throw r.Error($"a NUL-terminated UTF-16 {what} ({r.Remaining} bytes remain without a terminator)");
    }

    /// <summary>Reads a u8-length-prefixed, NUL-terminated ASCII string (the SP800-155 string fields).</summary>
    public static string ReadSizedAsciiZ(ref LeReader r, string what)
    {
        int size = r.U8(what + "Size");
        long at = r.Offset;
        var bytes = r.Take(size, what).Span;
        if (size > 0 && bytes[^1] != 0)
        {
            throw new EventLogFormatException(at + size - 1, $"{what} to end with a NUL");
        }
        if (!TryAscii(bytes, out var s))
        {
            throw new EventLogFormatException(at, $"{what} as printable ASCII");
        }
        return s;
    }

    /// <summary>A string in double quotes for one-line summaries, control characters escaped (untrusted text never reaches a terminal raw).</summary>
    public static string Quote(string s) => $"\"{Escape(s).Replace("\"", "\\\"", StringComparison.Ordinal)}\"";

    /// <summary>
    /// Control characters as \n, \r, \t or \uXXXX, for one-line summaries. Backslashes are kept as
    /// they are, so that UEFI file paths read naturally.
    /// </summary>
    public static string Escape(string s)
    {
        if (!s.Any(char.IsControl))
        {
            return s;
        }
        var sb = new StringBuilder(s.Length + 8);
        foreach (var c in s)
        {
            sb.Append(c switch
            {
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                _ when char.IsControl(c) => $"\\u{(int)c:x4}",
                _ => c.ToString(),
            });
        }
        return sb.ToString();
    }

    public static string HexPreview(ReadOnlySpan<byte> data) => data.Length <= PreviewBytes
        ? Convert.ToHexStringLower(data)
        : $"{Convert.ToHexStringLower(data[..PreviewBytes])}…";

    public static string Guid(Guid g) => g.ToString("D");

    /// <summary>A GUID with its well-known name, as "name (guid)" or just the GUID.</summary>
    public static string NamedGuid(Guid g) => UefiGuids.Name(g) is { } n ? $"{n} ({Guid(g)})" : Guid(g);

    public static JsonObject GuidJson(Guid g)
    {
        var o = new JsonObject { ["guid"] = Guid(g) };
        if (UefiGuids.Name(g) is { } n)
        {
            o["name"] = n;
        }
        return o;
    }

    private static bool AllPrintable(string s)
    {
        foreach (var c in s)
        {
            if (!IsPrintable(c))
            {
                return false;
            }
        }
        return true;
    }

    private static bool HasLoneSurrogate(string s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                i++;
            }
            else if (char.IsSurrogate(s[i]))
            {
                return true;
            }
        }
        return false;
    }
}

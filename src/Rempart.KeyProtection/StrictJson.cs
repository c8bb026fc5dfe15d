using System.Buffers.Text;
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Unicode;

namespace Rempart.KeyProtection;

/// <summary>
/// Reads one JSON object whose fields are fixed: unknown, duplicated or missing fields, values of the
/// wrong kind, non-canonical base64url or integers, wrong lengths — all become the format's one
/// exception type (through <c>error(field, message)</c>), naming the field by its JSON path.
/// Shared by the key protector and Guardian metadata parsers.
/// </summary>
internal sealed class StrictJson
{
    /// <summary>Timestamps are UTC with second precision, written one way only.</summary>
    public const string TimeFormat = "yyyy-MM-dd'T'HH:mm:ss'Z'";

    private readonly JsonElement _object;
    private readonly string _path;
    private readonly Func<string, string, Exception> _error;

    private StrictJson(JsonElement obj, string path, IReadOnlyCollection<string> required, IReadOnlyCollection<string> optional, Func<string, string, Exception> error)
    {
        _path = path;
        _error = error;
        if (obj.ValueKind != JsonValueKind.Object)
        {
            throw error(path.Length == 0 ? "$" : path, "expected an object");
        }
        _object = obj;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in obj.EnumerateObject())
        {
            if (!required.Contains(p.Name) && !optional.Contains(p.Name))
            {
                throw error(PathOf(p.Name), "unknown field");
            }
            if (!seen.Add(p.Name))
            {
                throw error(PathOf(p.Name), "duplicate field");
            }
        }
        foreach (var r in required)
        {
            if (!seen.Contains(r))
            {
                throw error(PathOf(r), "missing");
            }
        }
    }

    /// <summary>Parses a whole document: size limit, valid UTF-8, JSON syntax, no comments, shallow nesting.</summary>
    public static JsonDocument Parse(ReadOnlyMemory<byte> utf8, int maxBytes, Func<string, string, Exception> error)
    {
        if (utf8.Length > maxBytes)
        {
            throw error("$", $"larger than {maxBytes} bytes");
        }
        if (!Utf8.IsValid(utf8.Span))
        {
            throw error("$", "not valid UTF-8");
        }
        try
        {
            return JsonDocument.Parse(utf8, new JsonDocumentOptions { MaxDepth = 8, CommentHandling = JsonCommentHandling.Disallow, AllowTrailingCommas = false });
        }
        catch (JsonException e)
        {
            throw error("$", $"not JSON ({e.Message})");
        }
    }

    /// <summary>
    /// The root object of a versioned document: a <c>version</c> other than <paramref name="version"/> is
    /// reported as such (before any field a later version may have added is called unknown).
    /// </summary>
    public static StrictJson Root(JsonDocument document, int version, string[] required, string[] optional, Func<string, string, Exception> error)
    {
        var root = document.RootElement;
        if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("version", out var v)
            && v.ValueKind == JsonValueKind.Number && v.GetRawText() != version.ToString(CultureInfo.InvariantCulture))
        {
            throw error("version", $"unsupported version {v.GetRawText()} (this build reads version {version})");
        }
        var r = new StrictJson(root, "", required, optional, error);
        return r.Integer("version") == version ? r : throw error("version", $"unsupported version (this build reads version {version})");
    }

    public string PathOf(string name) => _path.Length == 0 ? name : $"{_path}.{name}";

    public Exception Error(string name, string message) => _error(PathOf(name), message);

    public bool Has(string name) => _object.TryGetProperty(name, out _);

    public string Text(string name, int maxLength)
    {
        var e = Get(name);
        if (e.ValueKind != JsonValueKind.String)
        {
            throw Error(name, "expected a string");
        }
        string s;
        try
        {
            s = e.GetString()!;
        }
        catch (InvalidOperationException)
        {
            throw Error(name, "not a valid string");
        }
        if (s.Length == 0 || s.Length > maxLength)
        {
            throw Error(name, $"must be 1-{maxLength} characters");
        }
        if (s.Any(char.IsControl) || (s.Any(char.IsSurrogate) && !IsWellFormed(s)))
        {
            throw Error(name, "contains control characters or broken UTF-16");
        }
        return s;
    }

    /// <summary>A name (VM, group, Guardian id): see <see cref="KeyIds.IsName"/>.</summary>
    public string Name(string name, int maxLength = 64)
    {
        var s = Text(name, maxLength);
        return KeyIds.IsName(s, maxLength) ? s : throw Error(name, $"must be 1-{maxLength} ASCII letters, digits, '.', '-' or '_'");
    }

    public string Kid(string name)
    {
        var s = Text(name, KeyIds.KidLength);
        return KeyIds.IsKid(s) ? s : throw Error(name, $"must be {KeyIds.KidLength} base64url characters");
    }

    /// <summary>Base64url without padding, in its one canonical form (re-encoding gives the same text), of an exact or bounded length.</summary>
    public byte[] Bytes(string name, int minLength, int maxLength)
    {
        var s = Text(name, (maxLength + 2) / 3 * 4);
        byte[] b;
        try
        {
            b = Base64Url.DecodeFromChars(s);
        }
        catch (FormatException)
        {
            throw Error(name, "not base64url");
        }
        if (Base64Url.EncodeToString(b) != s)
        {
            throw Error(name, "not canonical base64url (padding, whitespace or non-zero trailing bits)");
        }
        if (b.Length < minLength || b.Length > maxLength)
        {
            throw Error(name, minLength == maxLength ? $"must be {minLength} bytes (got {b.Length})" : $"must be {minLength}-{maxLength} bytes (got {b.Length})");
        }
        return b;
    }

    public byte[] Bytes(string name, int length) => Bytes(name, length, length);

    /// <summary>A small non-negative integer written canonically (digits only, no sign, exponent, fraction or leading zero).</summary>
    public int Integer(string name)
    {
        var e = Get(name);
        var raw = e.ValueKind == JsonValueKind.Number ? e.GetRawText() : "";
        if (raw.Length is 0 or > 9 || !raw.All(char.IsAsciiDigit) || raw.Length > 1 && raw[0] == '0')
        {
            throw Error(name, "expected a non-negative integer");
        }
        return int.Parse(raw, CultureInfo.InvariantCulture);
    }

    public DateTimeOffset Time(string name)
    {
        var s = Text(name, TimeFormat.Length);
        return DateTimeOffset.TryParseExact(s, TimeFormat, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t)
            && FormatTime(t) == s
            ? t
            : throw Error(name, "expected a UTC time yyyy-MM-ddTHH:mm:ssZ");
    }

    public StrictJson Object(string name, string[] required, string[]? optional = null) =>
        new(Get(name), PathOf(name), required, optional ?? [], _error);

    /// <summary>The elements of an array field, each with its path (<c>name[i]</c>).</summary>
    public List<(JsonElement Element, string Path)> Array(string name, int min, int max)
    {
        var e = Get(name);
        if (e.ValueKind != JsonValueKind.Array)
        {
            throw Error(name, "expected an array");
        }
        int n = e.GetArrayLength();
        if (n < min || n > max)
        {
            throw Error(name, $"must have {min}-{max} elements (got {n})");
        }
        return e.EnumerateArray().Select((x, i) => (x, $"{PathOf(name)}[{i}]")).ToList();
    }

    /// <summary>An element of an array read as an object with fixed fields.</summary>
    public StrictJson Element(JsonElement e, string path, string[] required, string[]? optional = null) =>
        new(e, path, required, optional ?? [], _error);

    /// <summary>An array element that must be a name.</summary>
    public string NameElement(JsonElement e, string path, int maxLength = 64)
    {
        string? s = null;
        if (e.ValueKind == JsonValueKind.String)
        {
            try
            {
                s = e.GetString();
            }
            catch (InvalidOperationException)
            {
            }
        }
        return KeyIds.IsName(s, maxLength) ? s! : throw _error(path, $"must be 1-{maxLength} ASCII letters, digits, '.', '-' or '_'");
    }

    /// <summary>
    /// Writer options: characters are escaped only where JSON requires it, so every value has one
    /// written form (no <c>\u002B</c> for '+') — what the bit-flip tests rely on. The documents are
    /// never embedded in HTML.
    /// </summary>
    public static JsonWriterOptions WriterOptions(bool indented) =>
        new() { Indented = indented, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static string FormatTime(DateTimeOffset t) => t.UtcDateTime.ToString(TimeFormat, CultureInfo.InvariantCulture);

    /// <summary>Truncates to whole seconds, UTC: what a timestamp keeps through the JSON form.</summary>
    public static DateTimeOffset TruncateToSeconds(DateTimeOffset t) =>
        DateTimeOffset.FromUnixTimeSeconds(t.ToUnixTimeSeconds());

    private JsonElement Get(string name) =>
        _object.TryGetProperty(name, out var e) ? e : throw Error(name, "missing");

    private static bool IsWellFormed(string s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                i++;
            }
            else if (char.IsSurrogate(s[i]))
            {
                return false;
            }
        }
        return true;
    }
}

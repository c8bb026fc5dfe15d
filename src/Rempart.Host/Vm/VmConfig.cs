using System.Globalization;
using System.Text;
using System.Text.Json;
using Rempart.KeyProtection;

namespace Rempart.Host.Vm;

/// <summary>The firmware variable template a VM's NVRAM starts from.</summary>
public enum SecureBootTemplate
{
    /// <summary>OVMF_VARS_4M.snakeoil.fd: Debian's snakeoil key in PK, KEK and db (the test guest).</summary>
    Snakeoil,

    /// <summary>OVMF_VARS_4M.ms.fd: Microsoft's keys enrolled (Windows, shim-signed Linux).</summary>
    Microsoft,
}

/// <summary>One disk of a VM: <c>disks/&lt;id&gt;.qcow2</c>, qcow2 with LUKS AES-256-XTS.</summary>
public sealed record VmDisk(string Id, long SizeBytes)
{
    public const string FormatName = "qcow2-luks-aes-256-xts";

    public string File => $"disks/{Id}.qcow2";
}

/// <summary>
/// <c>vm.json</c>, version 1 (docs/vm-bundle.md). Parsing is strict: unknown, missing, duplicated
/// or mistyped fields, values out of range and non-canonical spellings are <c>bundle.format</c>
/// naming the field.
/// </summary>
public sealed record VmConfig(
    string Name,
    string VmId,
    int MemoryMiB,
    int Cpus,
    IReadOnlyList<VmDisk> Disks,
    SecureBootTemplate SecureBoot,
    ShieldingLevel Shielding,
    DateTimeOffset Created)
{
    public const int MaxBytes = 64 * 1024;
    public const int MaxDisks = 16;
    private const string TimeFormat = "yyyy-MM-dd'T'HH:mm:ss'Z'";
    private static readonly string[] Fields = ["version", "name", "vmId", "memoryMiB", "cpus", "disks", "secureBoot", "shielding", "created"];
    private static readonly string[] DiskFields = ["id", "file", "sizeBytes", "format"];

    public static string ToWire(SecureBootTemplate t) => t == SecureBootTemplate.Microsoft ? "microsoft" : "snakeoil";

    /// <summary>Checks every value; throws <c>bundle.format</c>.</summary>
    public VmConfig Validated()
    {
        Check("name", KeyIds.IsName(Name), "1-64 letters, digits, '.', '-', '_', not starting with '.'");
        Check("vmId", KeyIds.IsName(VmId, KeyProtector.MaxVmIdLength), "1-128 letters, digits, '.', '-', '_', not starting with '.'");
        Check("memoryMiB", MemoryMiB is >= 16 and <= 4 * 1024 * 1024, "16 .. 4194304");
        Check("cpus", Cpus is >= 1 and <= 1024, "1 .. 1024");
        Check("disks", Disks.Count <= MaxDisks, $"at most {MaxDisks} disks");
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < Disks.Count; i++)
        {
            Check($"disks[{i}].id", KeyIds.IsName(Disks[i].Id) && ids.Add(Disks[i].Id), "a unique name (1-64 letters, digits, '.', '-', '_')");
            Check($"disks[{i}].sizeBytes", Disks[i].SizeBytes >= 1 << 20 && Disks[i].SizeBytes % 512 == 0 && Disks[i].SizeBytes <= 1L << 50, "a multiple of 512 from 1 MiB to 1 PiB");
        }
        Check("created", Created.Offset == TimeSpan.Zero && Created.Ticks % TimeSpan.TicksPerSecond == 0, "a UTC time in whole seconds");
        return this;
    }

    public byte[] ToJsonBytes()
    {
        Validated();
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNumber("version", 1);
            w.WriteString("name", Name);
            w.WriteString("vmId", VmId);
            w.WriteNumber("memoryMiB", MemoryMiB);
            w.WriteNumber("cpus", Cpus);
            w.WriteStartArray("disks");
            foreach (var d in Disks)
            {
                w.WriteStartObject();
                w.WriteString("id", d.Id);
                w.WriteString("file", d.File);
                w.WriteNumber("sizeBytes", d.SizeBytes);
                w.WriteString("format", VmDisk.FormatName);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteString("secureBoot", ToWire(SecureBoot));
            w.WriteString("shielding", ReleasePolicy.ToWire(Shielding));
            w.WriteString("created", Created.UtcDateTime.ToString(TimeFormat, CultureInfo.InvariantCulture));
            w.WriteEndObject();
        }
        ms.WriteByte((byte)'\n');
        return ms.ToArray();
    }

    public static VmConfig Parse(ReadOnlySpan<byte> utf8)
    {
        if (utf8.Length > MaxBytes)
        {
            throw Error("$", $"at most {MaxBytes} bytes");
        }
        string text;
        try
        {
            text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(utf8);
        }
        catch (DecoderFallbackException)
        {
            throw Error("$", "UTF-8 text");
        }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(text, new JsonDocumentOptions { AllowTrailingCommas = false, CommentHandling = JsonCommentHandling.Disallow, MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw Error("$", $"valid JSON ({e.Message})");
        }
        using (doc)
        {
            var root = Object(doc.RootElement, "$", Fields);
            if (root["version"].ValueKind != JsonValueKind.Number || root["version"].GetRawText() != "1")
            {
                throw Error("version", "1");
            }
            var disks = new List<VmDisk>();
            var arr = root["disks"];
            if (arr.ValueKind != JsonValueKind.Array)
            {
                throw Error("disks", "an array");
            }
            int i = 0;
            foreach (var e in arr.EnumerateArray())
            {
                string at = $"disks[{i}]";
                var d = Object(e, at, DiskFields);
                var disk = new VmDisk(Str(d, "id", at), Int(d, "sizeBytes", at, 1L << 50));
                if (!KeyIds.IsName(disk.Id) || disks.Any(x => x.Id == disk.Id))
                {
                    throw Error($"{at}.id", "a unique name (1-64 letters, digits, '.', '-', '_')");
                }
                if (Str(d, "file", at) != disk.File)
                {
                    throw Error($"{at}.file", $"\"{disk.File}\" (disks/<id>.qcow2)");
                }
                if (Str(d, "format", at) != VmDisk.FormatName)
                {
                    throw Error($"{at}.format", $"\"{VmDisk.FormatName}\"");
                }
                disks.Add(disk);
                i++;
            }
            var sb = Str(root, "secureBoot", null) switch
            {
                "snakeoil" => SecureBootTemplate.Snakeoil,
                "microsoft" => SecureBootTemplate.Microsoft,
                _ => throw Error("secureBoot", "\"snakeoil\" or \"microsoft\""),
            };
            if (!ReleasePolicy.TryParseShielding(Str(root, "shielding", null), out var shielding))
            {
                throw Error("shielding", "\"shielded\" or \"encryption-supported\"");
            }
            string created = Str(root, "created", null);
            if (!DateTimeOffset.TryParseExact(created, TimeFormat, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var when))
            {
                throw Error("created", "a UTC time yyyy-MM-ddTHH:mm:ssZ");
            }
            return new VmConfig(Str(root, "name", null), Str(root, "vmId", null), (int)Int(root, "memoryMiB", null, int.MaxValue),
                (int)Int(root, "cpus", null, int.MaxValue), disks, sb, shielding, when.ToUniversalTime()).Validated();
        }
    }

    private static Dictionary<string, JsonElement> Object(JsonElement e, string at, string[] fields)
    {
        if (e.ValueKind != JsonValueKind.Object)
        {
            throw Error(at, "an object");
        }
        var seen = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
        foreach (var p in e.EnumerateObject())
        {
            string path = at == "$" ? p.Name : $"{at}.{p.Name}";
            if (!fields.Contains(p.Name, StringComparer.Ordinal))
            {
                throw Error(path, "no such field (unknown)");
            }
            if (!seen.TryAdd(p.Name, p.Value))
            {
                throw Error(path, "a field given once (duplicated)");
            }
        }
        foreach (var f in fields)
        {
            if (!seen.ContainsKey(f))
            {
                throw Error(at == "$" ? f : $"{at}.{f}", "a value (missing)");
            }
        }
        return seen;
    }

    private static string Str(Dictionary<string, JsonElement> o, string name, string? at) =>
        o[name].ValueKind == JsonValueKind.String ? o[name].GetString()! : throw Error(at is null ? name : $"{at}.{name}", "a string");

    private static long Int(Dictionary<string, JsonElement> o, string name, string? at, long max)
    {
        var v = o[name];
        string raw = v.ValueKind == JsonValueKind.Number ? v.GetRawText() : "";
        if (raw.Length == 0 || raw.Length > 19 || !raw.All(char.IsAsciiDigit) || (raw.Length > 1 && raw[0] == '0')
            || !long.TryParse(raw, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n > max)
        {
            throw Error(at is null ? name : $"{at}.{name}", $"a whole number written in digits, at most {max}");
        }
        return n;
    }

    private void Check(string field, bool ok, string expected)
    {
        if (!ok)
        {
            throw Error(field, expected);
        }
    }

    private static VmBundleException Error(string field, string expected) =>
        new("bundle.format", $"vm.json, {field}: expected {expected}");
}

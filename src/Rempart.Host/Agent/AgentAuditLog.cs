using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rempart.Host.Agent;

/// <summary>
/// The agent's own audit log (DATA/audit.jsonl, 0600): one JSON object a line, what happened to
/// which VM on this host — created, started (with the Guardian's release id), stopped, console
/// sessions opened or refused. Hash-chained like the Guardian's: each record carries the SHA-256
/// of the previous line, so a removed or edited line breaks <see cref="Verify"/>. No secret is
/// ever written here.
/// </summary>
public sealed class AgentAuditLog
{
    private readonly string _path;
    private readonly Lock _lock = new();
    private long _seq;
    private string _last;

    public AgentAuditLog(string path)
    {
        _path = path;
        (_seq, _last) = (0, new string('0', 64));
        if (File.Exists(path))
        {
            foreach (var line in File.ReadLines(path))
            {
                if (line.Length == 0)
                {
                    continue;
                }
                _seq = JsonNode.Parse(line)?["seq"]?.GetValue<long>() ?? _seq;
                _last = Hash(line);
            }
        }
    }

    /// <summary>Appends a record (fsynced) and returns its sequence number.</summary>
    public long Append(string evt, string vm, IReadOnlyDictionary<string, object?>? details = null)
    {
        lock (_lock)
        {
            var o = new JsonObject
            {
                ["seq"] = _seq + 1,
                ["time"] = DateTimeOffset.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", System.Globalization.CultureInfo.InvariantCulture),
                ["event"] = evt,
                ["vm"] = vm,
                ["prev"] = _last,
            };
            foreach (var (k, v) in details ?? new Dictionary<string, object?>())
            {
                o[k] = v is null ? null : JsonSerializer.SerializeToNode(v);
            }
            var line = o.ToJsonString();
            using (var f = new FileStream(_path, new FileStreamOptions
            {
                Mode = FileMode.Append,
                Access = FileAccess.Write,
                UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            }))
            {
                f.Write(Encoding.UTF8.GetBytes(line + "\n"));
                f.Flush(flushToDisk: true);
            }
            _seq++;
            _last = Hash(line);
            return _seq;
        }
    }

    /// <summary>All records, oldest first.</summary>
    public IReadOnlyList<JsonObject> Read()
    {
        lock (_lock)
        {
            return File.Exists(_path)
                ? [.. File.ReadLines(_path).Where(l => l.Length > 0).Select(l => JsonNode.Parse(l)!.AsObject())]
                : [];
        }
    }

    /// <summary>Checks the chain; returns the first broken sequence number, or null when intact.</summary>
    public long? Verify()
    {
        lock (_lock)
        {
            string prev = new('0', 64);
            long expected = 1;
            foreach (var line in File.Exists(_path) ? File.ReadLines(_path) : [])
            {
                if (line.Length == 0)
                {
                    continue;
                }
                var o = JsonNode.Parse(line)!.AsObject();
                if (o["seq"]?.GetValue<long>() != expected || o["prev"]?.GetValue<string>() != prev)
                {
                    return expected;
                }
                prev = Hash(line);
                expected++;
            }
            return null;
        }
    }

    private static string Hash(string line) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(line)));
}

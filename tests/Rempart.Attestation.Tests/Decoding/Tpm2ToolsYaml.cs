using System.Text;
using System.Text.RegularExpressions;

namespace Rempart.Attestation.Tests.Decoding;

/// <summary>
/// The few fields the cross-checks need from tpm2_eventlog's YAML (tpm2-tools
/// lib/tpm2_eventlog_yaml.c), read by line matching, not a YAML library: each "- EventNum: N" block
/// becomes a list of (key, value) pairs where the key keeps its indentation ("    DevicePath" is an
/// image load's, "      DevicePath" a Boot####'s), single-quoted values are unquoted, and
/// double-quoted values are unescaped and joined across tpm2-tools' "\"-continued lines.
/// </summary>
public sealed partial class Tpm2ToolsYaml
{
    public sealed record Event(int Number, string EventType, IReadOnlyList<(string Key, string Value)> Fields)
    {
        public IEnumerable<string> All(string key) => Fields.Where(f => f.Key == key).Select(f => f.Value);

        public string? One(string key) => All(key).SingleOrDefault();
    }

    [GeneratedRegex(@"^(?<key>\s*(- )?[A-Za-z][A-Za-z0-9\[\]]*): ?(?<value>.*)$")]
    private static partial Regex Field();

    public IReadOnlyList<Event> Events { get; }

    private Tpm2ToolsYaml(IReadOnlyList<Event> events) => Events = events;

    public static Tpm2ToolsYaml Read(string path)
    {
        var events = new List<Event>();
        List<(string, string)>? fields = null;
        int number = -1;
        string type = "";
        var lines = File.ReadAllLines(path);
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i];
            // Crypto-agile output starts each event with "- EventNum: N"; SHA-1 log output has no
            // number, so an event starts at a "  PCRIndex:" line when the current one has its own.
            bool numbered = line.StartsWith("- EventNum: ", StringComparison.Ordinal);
            bool unnumbered = line.StartsWith("  PCRIndex: ", StringComparison.Ordinal) && (fields is null || fields.Exists(f => f.Item1 == "  PCRIndex"));
            if (numbered || unnumbered || line == "pcrs:")
            {
                if (fields is not null)
                {
                    events.Add(new Event(number, type, fields));
                }
                fields = line == "pcrs:" ? null : [];
                number = numbered ? int.Parse(line["- EventNum: ".Length..]) : events.Count;
                type = "";
                if (!unnumbered)
                {
                    continue;
                }
            }
            var m = Field().Match(line);
            if (fields is null || !m.Success)
            {
                continue;
            }
            string key = m.Groups["key"].Value;
            string value = m.Groups["value"].Value;
            if (value.StartsWith('"'))
            {
                var raw = new StringBuilder(value);
                while (raw[^1] == '\\' && i + 1 < lines.Length)
                {
                    raw.Length--;
                    raw.Append(lines[++i].TrimStart());
                }
                value = Unescape(raw.ToString()[1..^1]);
            }
            else if (value.StartsWith('\'') && value.EndsWith('\'') && value.Length >= 2)
            {
                value = value[1..^1].Replace("''", "'", StringComparison.Ordinal);
            }
            if (key == "  EventType")
            {
                type = value;
            }
            fields.Add((key, value));
        }
        if (fields is not null)
        {
            events.Add(new Event(number, type, fields));
        }
        return new Tpm2ToolsYaml(events);
    }

    /// <summary>YAML double-quoted escapes, as yaml_split_escape_string writes them.</summary>
    private static string Unescape(string s)
    {
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] != '\\' || i + 1 == s.Length)
            {
                sb.Append(s[i]);
                continue;
            }
            char c = s[++i];
            switch (c)
            {
                case 'x':
                    sb.Append((char)Convert.ToByte(s.Substring(i + 1, 2), 16));
                    i += 2;
                    break;
                default:
                    sb.Append(c switch
                    {
                        '0' => '\0',
                        'a' => '\a',
                        'b' => '\b',
                        't' => '\t',
                        'v' => '\v',
                        'f' => '\f',
                        'n' => '\n',
                        'r' => '\r',
                        'e' => '\x1b',
                        _ => c,
                    });
                    break;
            }
        }
        return sb.ToString();
    }
}

namespace Rempart.Cli;

/// <summary>A usage error: printed as one line, exit code 2.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>
/// Minimal, strict option parsing in the style of kubectl/virsh: verbs first, then
/// <c>--name value</c> or <c>--name=value</c>. Unknown options and missing values are
/// usage errors, never ignored. An option is given once, unless the command declares it
/// repeatable (read with <see cref="GetAll"/>).
/// </summary>
public sealed class Args
{
    private readonly Dictionary<string, string?> _options = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<string>> _repeated = new(StringComparer.Ordinal);
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);

    public Args(IEnumerable<string> args, IReadOnlySet<string> flags, IReadOnlySet<string>? repeatable = null)
    {
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            var a = list[i];
            if (a == "-h")
            {
                a = "--help";
            }
            if (!a.StartsWith("--", StringComparison.Ordinal) || a.Length == 2)
            {
                Positionals.Add(a);
                continue;
            }
            var name = a[2..];
            string? value = null;
            int eq = name.IndexOf('=');
            if (eq >= 0)
            {
                value = name[(eq + 1)..];
                name = name[..eq];
            }
            else if (!flags.Contains(name))
            {
                if (i + 1 >= list.Count)
                {
                    throw new UsageException($"option --{name} needs a value");
                }
                value = list[++i];
            }
            if (repeatable?.Contains(name) == true && value is not null)
            {
                if (!_repeated.TryGetValue(name, out var values))
                {
                    _repeated[name] = values = [];
                    _options[name] = value;
                }
                values.Add(value);
                continue;
            }
            if (_options.ContainsKey(name))
            {
                throw new UsageException($"option --{name} given twice");
            }
            _options[name] = value;
        }
    }

    public List<string> Positionals { get; } = [];

    public bool Help => Flag("help");

    public bool Flag(string name)
    {
        _used.Add(name);
        return _options.ContainsKey(name);
    }

    public string? Get(string name)
    {
        _used.Add(name);
        return _options.TryGetValue(name, out var v) ? v : null;
    }

    /// <summary>Every value of a repeatable option, in order (empty when not given).</summary>
    public IReadOnlyList<string> GetAll(string name)
    {
        _used.Add(name);
        return _repeated.TryGetValue(name, out var v) ? v : [];
    }

    public string Require(string name, string what) =>
        Get(name) is { Length: > 0 } v ? v : throw new UsageException($"missing --{name} ({what})");

    /// <summary>The output format: text (default) or json.</summary>
    public string Format(params string[] allowed)
    {
        var f = Get("format") ?? "text";
        string[] ok = allowed.Length == 0 ? ["text", "json"] : allowed;
        return ok.Contains(f) ? f : throw new UsageException($"--format must be one of {string.Join(", ", ok)} (got '{f}')");
    }

    /// <summary>Rejects options the command did not read (typos must not be ignored silently).</summary>
    public void EnsureAllUsed()
    {
        var unknown = _options.Keys.Where(k => !_used.Contains(k)).ToList();
        if (unknown.Count > 0)
        {
            throw new UsageException($"unknown option --{unknown[0]} (see --help)");
        }
    }
}

using System.Diagnostics;
using System.Text;

namespace Rempart.VmBench;

/// <summary>
/// Reads a test guest's serial console (a unix socket or QEMU's stdout) and stamps each
/// <c>REMPART-GUEST: </c> line (docs/test-guest.md) with <see cref="Stopwatch.GetTimestamp"/> as it
/// arrives. Carriage returns and terminal escapes before the prefix are ignored.
/// </summary>
public sealed class GuestConsole
{
    private const string Prefix = "REMPART-GUEST: ";
    private readonly List<(long At, string Item)> _items = [];
    private readonly Dictionary<string, long> _firsts = [];
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _sync = new();

    private GuestConsole(Stream stream) => _ = PumpAsync(stream);

    public static GuestConsole Watch(Stream stream) => new(stream);

    /// <summary>The report items seen so far, with their arrival time.</summary>
    public IReadOnlyList<(long At, string Item)> Items
    {
        get
        {
            lock (_sync)
            {
                return [.. _items];
            }
        }
    }

    /// <summary>
    /// Console lines (firmware's, kernel's) whose first arrival is stamped: the firmware's boot
    /// manager loading the UKI, and systemd-stub's Linux EFI stub running.
    /// </summary>
    public static readonly string[] Milestones = ["BdsDxe: loading", "EFI stub: "];

    /// <summary>When the first console line containing <paramref name="milestone"/> (one of <see cref="Milestones"/>) arrived, if it did.</summary>
    public long? Milestone(string milestone)
    {
        lock (_sync)
        {
            return _firsts.TryGetValue(milestone, out var at) ? at : null;
        }
    }

    /// <summary>When the first item equal to (or, with <paramref name="prefix"/>, starting with) <paramref name="item"/> arrived.</summary>
    public async Task<long> WaitForAsync(string item, TimeSpan timeout, bool prefix = false)
    {
        var until = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (true)
        {
            foreach (var (at, it) in Items)
            {
                if (prefix ? it.StartsWith(item, StringComparison.Ordinal) : it == item)
                {
                    return at;
                }
                if (it.StartsWith("error", StringComparison.Ordinal))
                {
                    throw new InvalidOperationException($"the guest reported '{it}'");
                }
            }
            if (_closed.Task.IsCompleted)
            {
                throw new InvalidOperationException($"the console closed before '{item}' (items: {string.Join(", ", Items.Select(i => i.Item).Where(i => !i.StartsWith("eventlog ", StringComparison.Ordinal)))})");
            }
            if (Stopwatch.GetTimestamp() > until)
            {
                throw new TimeoutException($"no '{item}' from the guest within {timeout.TotalSeconds:0} s");
            }
            await Task.WhenAny(_closed.Task, Task.Delay(20));
        }
    }

    private async Task PumpAsync(Stream stream)
    {
        var buffer = new byte[16384];
        var line = new StringBuilder();
        try
        {
            while (true)
            {
                int n = await stream.ReadAsync(buffer);
                if (n == 0)
                {
                    break;
                }
                long at = Stopwatch.GetTimestamp();
                foreach (char c in Encoding.Latin1.GetString(buffer, 0, n))
                {
                    if (c != '\n')
                    {
                        line.Append(c);
                        continue;
                    }
                    var text = line.ToString();
                    line.Clear();
                    foreach (var m in Milestones)
                    {
                        if (text.Contains(m, StringComparison.Ordinal))
                        {
                            lock (_sync)
                            {
                                _firsts.TryAdd(m, at);
                            }
                        }
                    }
                    int i = text.IndexOf(Prefix, StringComparison.Ordinal);
                    if (i >= 0)
                    {
                        lock (_sync)
                        {
                            _items.Add((at, text[(i + Prefix.Length)..].TrimEnd('\r', ' ')));
                        }
                    }
                }
            }
        }
        catch (IOException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            _closed.TrySetResult();
        }
    }
}

using System.Diagnostics;
using System.Globalization;

namespace Rempart.LoadGen;

/// <summary>
/// CPU time at one instant: this process (the load generator), the Guardian, the PostgreSQL
/// backends serving the run's database (by process id: backends come and go), and the whole machine.
/// </summary>
public sealed record CpuSnapshot(TimeSpan Client, TimeSpan Guardian, IReadOnlyDictionary<int, TimeSpan> Postgres, TimeSpan MachineBusy, TimeSpan MachineTotal);

/// <summary>
/// CPU seconds spent in a window, split by who spent them; "other" is the machine's rest: other
/// processes (on a shared machine, other people's work), PostgreSQL's background processes, and
/// what the kernel does outside any process.
/// </summary>
public sealed record CpuUsage(double ClientSeconds, double GuardianSeconds, double PostgresSeconds, double OtherSeconds, double MachineBusySeconds, double MachineSeconds)
{
    public static CpuUsage Between(CpuSnapshot a, CpuSnapshot b)
    {
        double client = (b.Client - a.Client).TotalSeconds, guardian = (b.Guardian - a.Guardian).TotalSeconds;
        // A backend that started in the window counts from zero; one that ended in it is lost (the Guardian's pool keeps them open).
        double pg = b.Postgres.Sum(p => (p.Value - a.Postgres.GetValueOrDefault(p.Key)).TotalSeconds);
        double busy = (b.MachineBusy - a.MachineBusy).TotalSeconds;
        return new CpuUsage(client, guardian, pg, Math.Max(0, busy - client - guardian - pg), busy, (b.MachineTotal - a.MachineTotal).TotalSeconds);
    }

    /// <summary>Share of all cores' time the load generator used.</summary>
    public double ClientShare => MachineSeconds > 0 ? ClientSeconds / MachineSeconds : 0;

    public double BusyShare => MachineSeconds > 0 ? MachineBusySeconds / MachineSeconds : 0;
}

/// <summary>Reads CPU times from /proc (Linux): per process utime + stime, and the machine's /proc/stat.</summary>
public static class CpuMeter
{
    private static readonly double TicksPerSecond = 100; // USER_HZ: 100 on every Linux architecture .NET runs on

    /// <param name="guardian">The Guardian process, or null.</param>
    /// <param name="database">The PostgreSQL database of the run (its backends' titles name it), or null.</param>
    public static CpuSnapshot Take(GuardianProcess? guardian, string? database = null)
    {
        var (busy, total) = Machine();
        return new CpuSnapshot(Process.GetCurrentProcess().TotalProcessorTime, guardian?.CpuTime ?? TimeSpan.Zero,
            database is null ? new Dictionary<int, TimeSpan>() : Backends(database), busy, total);
    }

    /// <summary>
    /// utime + stime of every PostgreSQL backend whose process title ("postgres: USER DATABASE HOST(PORT) STATE")
    /// names <paramref name="database"/>, by process id.
    /// </summary>
    private static Dictionary<int, TimeSpan> Backends(string database)
    {
        var result = new Dictionary<int, TimeSpan>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            var name = Path.GetFileName(dir);
            if (name.Length == 0 || !char.IsAsciiDigit(name[0]))
            {
                continue;
            }
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                int open = stat.IndexOf('('), close = stat.LastIndexOf(')');
                if (open < 0 || close < open || stat[(open + 1)..close] != "postgres")
                {
                    continue;
                }
                var title = File.ReadAllText(Path.Combine(dir, "cmdline")).Split(' ', '\0');
                if (!title.Contains(database, StringComparer.Ordinal))
                {
                    continue;
                }
                var fields = stat[(close + 2)..].Split(' ');
                // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15 (proc(5)).
                long ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
                result[int.Parse(name, CultureInfo.InvariantCulture)] = TimeSpan.FromSeconds(ticks / TicksPerSecond);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
            {
                // The process ended between listing and reading.
            }
        }
        return result;
    }

    /// <summary>The machine's busy and total CPU time from the first line of /proc/stat.</summary>
    private static (TimeSpan Busy, TimeSpan Total) Machine()
    {
        var line = File.ReadLines("/proc/stat").First();
        var v = line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(s => long.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
        long idle = v[3] + v[4];
        long total = v.Take(8).Sum();
        return (TimeSpan.FromSeconds((total - idle) / TicksPerSecond), TimeSpan.FromSeconds(total / TicksPerSecond));
    }
}

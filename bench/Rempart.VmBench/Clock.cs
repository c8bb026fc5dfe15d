using System.Diagnostics;
using System.Globalization;

namespace Rempart.VmBench;

/// <summary>
/// Times in one domain, milliseconds of <see cref="Stopwatch"/>: process start times from
/// <c>/proc/PID/stat</c> (clock ticks since boot, 10 ms) and file modification times (a unix
/// socket's is when it was bound) are brought into it.
/// </summary>
public static class Clock
{
    private static readonly long TicksPerSecond = 100; // USER_HZ on Linux x86-64

    public static double Ms(long from, long to) => (to - from) * 1000.0 / Stopwatch.Frequency;

    /// <summary>The stopwatch timestamp at which process <paramref name="pid"/> was forked (±10 ms).</summary>
    public static long ProcessStart(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        double startSeconds = long.Parse(fields[19], CultureInfo.InvariantCulture) / (double)TicksPerSecond; // field 22: starttime
        double uptime = double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], CultureInfo.InvariantCulture);
        long now = Stopwatch.GetTimestamp();
        return now - (long)((uptime - startSeconds) * Stopwatch.Frequency);
    }

    /// <summary>The stopwatch timestamp of a file's last modification.</summary>
    public static long FileTime(string path)
    {
        var age = DateTime.UtcNow - File.GetLastWriteTimeUtc(path);
        return Stopwatch.GetTimestamp() - (long)(age.TotalSeconds * Stopwatch.Frequency);
    }

    /// <summary>Synchronous progress: stamps each line as the reporter calls it (Progress&lt;T&gt; would post it).</summary>
    public sealed class Marks : IProgress<string>
    {
        private readonly Lock _sync = new();

        public List<(long At, string Text)> Lines { get; } = [];

        public void Report(string value)
        {
            lock (_sync)
            {
                Lines.Add((Stopwatch.GetTimestamp(), value));
            }
        }

        public long First(string startsWith) =>
            Lines.First(l => l.Text.StartsWith(startsWith, StringComparison.Ordinal)).At;
    }
}

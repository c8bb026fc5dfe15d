using System.Diagnostics;
using System.Globalization;

namespace Rempart.ReleaseBench;

/// <summary>
/// <c>openssl speed ecdhp384</c>, a raw P-384 ECDH rate measured by a tool nobody here wrote, in the
/// same run as the releases: one process (ops per CPU-second of its user time, openssl's default, so
/// also the CPU µs per derivation) and <c>-multi</c> one process per core (<c>-elapsed</c>: ops per
/// wall-clock second, summed, the all-core rate).
/// </summary>
public sealed record OpenSslRate(double PerSecondOneProcess, double PerSecondAllCores, int Cores, int Seconds)
{
    /// <summary>CPU µs per derivation, one process (1e6 ÷ ops per CPU-second).</summary>
    public double CpuMicroseconds => PerSecondOneProcess > 0 ? 1e6 / PerSecondOneProcess : 0;

    public static OpenSslRate Measure(int seconds)
    {
        int cores = Environment.ProcessorCount;
        double one = Run(["speed", "-mr", "-seconds", seconds.ToString(CultureInfo.InvariantCulture), "ecdhp384"]);
        double all = Run(["speed", "-mr", "-elapsed", "-seconds", seconds.ToString(CultureInfo.InvariantCulture), "-multi", cores.ToString(CultureInfo.InvariantCulture), "ecdhp384"]);
        return new OpenSslRate(one, all, cores, seconds);
    }

    /// <summary>The rate of the last "+F5:idx:bits:ops/s:s/op" line (with -multi: the sum over the processes).</summary>
    private static double Run(string[] args)
    {
        var psi = new ProcessStartInfo("openssl") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        Process p;
        try
        {
            p = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("openssl is not installed (the independent raw ECDH rate needs it): run scripts/setup.sh", e);
        }
        using (p)
        {
            var stderr = p.StandardError.ReadToEndAsync();
            var lines = p.StandardOutput.ReadToEnd().Split('\n');
            p.WaitForExit();
            var f5 = lines.LastOrDefault(l => l.StartsWith("+F5:", StringComparison.Ordinal))?.Split(':');
            if (p.ExitCode != 0 || f5 is not { Length: >= 5 } || !double.TryParse(f5[3], NumberStyles.Float, CultureInfo.InvariantCulture, out var rate))
            {
                throw new InvalidOperationException($"openssl {string.Join(' ', args)} failed (exit {p.ExitCode}): {stderr.Result.Trim()}");
            }
            return rate;
        }
    }
}

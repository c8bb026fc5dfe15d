using System.Diagnostics;
using System.Globalization;

namespace Rempart.SnapshotBench;

/// <summary>
/// <c>openssl speed -evp aes-256-gcm</c> on one core (no <c>-multi</c>), in bytes per second: per second of CPU
/// user time (openssl's default), or of wall-clock time with <c>-elapsed</c>.
/// </summary>
internal static class OpenSslSpeed
{
    public static double Aes256Gcm(int blockBytes, int seconds, bool elapsed)
    {
        var psi = new ProcessStartInfo("openssl")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.ArgumentList.Add("speed");
        if (elapsed)
        {
            psi.ArgumentList.Add("-elapsed");
        }
        foreach (var a in new[] { "-seconds", seconds.ToString(CultureInfo.InvariantCulture), "-bytes", blockBytes.ToString(CultureInfo.InvariantCulture), "-evp", "aes-256-gcm" })
        {
            psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start openssl");
        _ = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        // The result line: "AES-256-GCM   4123456.78k" (thousands of bytes per second).
        var line = output.Split('\n').LastOrDefault(l => l.StartsWith("AES-256-GCM", StringComparison.OrdinalIgnoreCase) || l.StartsWith("aes-256-gcm", StringComparison.Ordinal))
            ?? throw new InvalidOperationException($"no AES-256-GCM line in openssl speed's output:\n{output}");
        var figure = line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[^1].TrimEnd('k');
        return double.Parse(figure, CultureInfo.InvariantCulture) * 1000;
    }
}

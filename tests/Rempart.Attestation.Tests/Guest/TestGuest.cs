using System.Text;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Attestation.Tests.Guest;

/// <summary>What the test guest reported on its serial console (docs/test-guest.md).</summary>
public sealed record GuestReport(int ExitCode, string Console, IReadOnlyList<string> Lines)
{
    public string? Value(string key) =>
        Lines.FirstOrDefault(l => l.StartsWith(key + "=", StringComparison.Ordinal))?[(key.Length + 1)..]
        ?? Lines.FirstOrDefault(l => l.StartsWith(key + " ", StringComparison.Ordinal))?[(key.Length + 1)..];

    public byte[] EventLog => Convert.FromBase64String(string.Concat(Lines.Where(l => l.StartsWith("eventlog ", StringComparison.Ordinal) && !l.StartsWith("eventlog-", StringComparison.Ordinal)).Select(l => l[9..])));

    /// <summary>bank → PCR → value, from the "pcr BANK N HEX" lines (the vTPM's own values, read through sysfs).</summary>
    public Dictionary<string, Dictionary<int, byte[]>> Pcrs()
    {
        var result = new Dictionary<string, Dictionary<int, byte[]>>();
        foreach (var l in Lines.Where(l => l.StartsWith("pcr ", StringComparison.Ordinal)))
        {
            var parts = l.Split(' ');
            if (!result.TryGetValue(parts[1], out var bank))
            {
                result[parts[1]] = bank = [];
            }
            bank[int.Parse(parts[2], System.Globalization.CultureInfo.InvariantCulture)] = Convert.FromHexString(parts[3]);
        }
        return result;
    }
}

/// <summary>Builds (cached) and boots the test guest with the project's scripts; a missing tool fails the test.</summary>
public static class TestGuest
{
    private static readonly Lock BuildLock = new();
    private static bool _built;

    public static string RepoRoot { get; } = FindRoot();

    private static string FindRoot([System.Runtime.CompilerServices.CallerFilePath] string source = "")
    {
        // From the build output (inside the repository) or, when the output is elsewhere, from this source file.
        foreach (var start in new[] { AppContext.BaseDirectory, Path.GetDirectoryName(source) ?? "/" })
        {
            var dir = new DirectoryInfo(start);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Rempart.slnx")))
            {
                dir = dir.Parent;
            }
            if (dir is not null)
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("repository root (Rempart.slnx) not found");
    }

    public static string Dir => Path.Combine(RepoRoot, "artifacts", "test-guest");

    public static void EnsureBuilt()
    {
        lock (BuildLock)
        {
            if (_built)
            {
                return;
            }
            var r = Tool.Run("bash", [Path.Combine(RepoRoot, "scripts", "build-test-guest.sh")], timeoutMs: 900_000);
            Assert.True(r.ExitCode == 0, $"build-test-guest.sh failed ({r.ExitCode}): {r.Stderr}");
            _built = true;
        }
    }

    public static GuestReport Boot(string image, string banks)
    {
        EnsureBuilt();
        var r = Tool.Run("bash", [Path.Combine(RepoRoot, "scripts", "boot-test-guest.sh"), Path.Combine(Dir, image), "--banks", banks], timeoutMs: 400_000);
        const string prefix = "REMPART-GUEST: ";
        var lines = r.Stdout.Split('\n').Select(l => l.TrimEnd('\r'))
            .Where(l => l.StartsWith(prefix, StringComparison.Ordinal)).Select(l => l[prefix.Length..]).ToList();
        return new GuestReport(r.ExitCode, r.Stdout + "\n--- stderr ---\n" + r.Stderr, lines);
    }

    public static string Marker() => File.ReadAllText(Path.Combine(Dir, "marker.txt"), Encoding.ASCII).Trim();
}

namespace Rempart.Attestation.Tests;

/// <summary>
/// The public firmware event logs in ../shared/fixtures/eventlogs (see SOURCES.md there). They
/// are not copied into the repository. Found through REMPART_FIXTURES, or beside the repository.
/// Missing fixtures fail the tests (they never skip).
/// </summary>
public static class Fixtures
{
    public static string Dir { get; } = Find();

    private static string Find([System.Runtime.CompilerServices.CallerFilePath] string source = "")
    {
        var env = Environment.GetEnvironmentVariable("REMPART_FIXTURES");
        if (!string.IsNullOrEmpty(env))
        {
            return Directory.Exists(env) ? env : throw new DirectoryNotFoundException($"REMPART_FIXTURES={env} does not exist");
        }
        // From the build output (inside the repository) or, when the output is elsewhere, from this source file.
        foreach (var start in new[] { AppContext.BaseDirectory, Path.GetDirectoryName(source) ?? "" })
        {
            if (FindFrom(start) is { } found)
            {
                return found;
            }
        }
        throw new DirectoryNotFoundException(
            "event log fixtures not found: they live in ../shared/fixtures/eventlogs beside the repository " +
            "(public logs from go-attestation, go-tpm-tools, go-eventlog, tpm2-tools and keylime; see SOURCES.md there), " +
            "or point REMPART_FIXTURES at a copy");
    }

    private static string? FindFrom(string start)
    {
        var dir = string.IsNullOrEmpty(start) ? null : new DirectoryInfo(start);
        while (dir is not null)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "fixtures", "eventlogs");
            if (File.Exists(Path.Combine(candidate, "SOURCES.md")))
            {
                return candidate;
            }
            var sibling = Path.Combine(dir.FullName, "..", "shared", "fixtures", "eventlogs");
            if (File.Exists(Path.Combine(sibling, "SOURCES.md")))
            {
                return Path.GetFullPath(sibling);
            }
            dir = dir.Parent;
        }
        return null;
    }

    public static string Path_(string name) => Path.Combine(Dir, name);

    public static byte[] Bytes(string name) => File.ReadAllBytes(Path.Combine(Dir, name));

    /// <summary>Every binary log (not JSON, YAML, protobuf or text companions).</summary>
    public static IEnumerable<string> BinaryLogs() => Directory.GetFiles(Dir)
        .Select(Path.GetFileName)
        .Where(n => n is not null && !n.EndsWith(".json", StringComparison.Ordinal) && !n.EndsWith(".yaml", StringComparison.Ordinal)
            && !n.EndsWith(".md", StringComparison.Ordinal) && !n.EndsWith(".pb", StringComparison.Ordinal) && !n.EndsWith(".warn", StringComparison.Ordinal))
        .Select(n => n!)
        .Order(StringComparer.Ordinal);
}

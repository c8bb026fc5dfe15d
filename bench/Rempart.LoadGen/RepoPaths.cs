namespace Rempart.LoadGen;

/// <summary>Where the repository, its scripts and the shared event log fixtures are.</summary>
public static class RepoPaths
{
    /// <summary>The repository root: the nearest folder holding Rempart.slnx, from the working directory or this program.</summary>
    public static string Root { get; } = Find();

    /// <summary>The fixture event logs: REMPART_FIXTURES, or shared/fixtures/eventlogs beside the repository (as the tests find them).</summary>
    public static string Fixtures
    {
        get
        {
            if (Environment.GetEnvironmentVariable("REMPART_FIXTURES") is { Length: > 0 } env)
            {
                return env;
            }
            for (var dir = new DirectoryInfo(Root); dir is not null; dir = dir.Parent)
            {
                foreach (var candidate in new[] { Path.Combine(dir.FullName, "shared", "fixtures", "eventlogs"), Path.Combine(dir.FullName, "..", "shared", "fixtures", "eventlogs") })
                {
                    if (File.Exists(Path.Combine(candidate, "SOURCES.md")))
                    {
                        return Path.GetFullPath(candidate);
                    }
                }
            }
            throw new DirectoryNotFoundException("event log fixtures not found (../shared/fixtures/eventlogs beside the repository, or REMPART_FIXTURES)");
        }
    }

    private static string Find()
    {
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Rempart.slnx")))
                {
                    return dir.FullName;
                }
            }
        }
        throw new DirectoryNotFoundException("run from inside the Rempart repository (no Rempart.slnx found above the working directory)");
    }
}

using System.Runtime.CompilerServices;
using Npgsql;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Guardian.Tests.Storage;

/// <summary>
/// The PostgreSQL server the tests use: <c>REMPART_TEST_POSTGRES</c> (a connection string, set by
/// scripts/test.sh), else the private cluster that scripts/postgres.sh starts. When neither gives
/// a reachable server the tests fail with the reason — they never skip.
/// </summary>
internal static class TestPostgres
{
    public const string Variable = "REMPART_TEST_POSTGRES";

    private static readonly Lazy<Task<string>> Server = new(FindAsync);

    public static Task<string> ConnectionStringAsync() => Server.Value;

    private static async Task<string> FindAsync()
    {
        var cs = Environment.GetEnvironmentVariable(Variable);
        var source = Variable;
        if (string.IsNullOrWhiteSpace(cs))
        {
            var script = Path.Combine(RepositoryRoot(), "scripts", "postgres.sh");
            var run = await Task.Run(() => Tool.Run("bash", [script], timeoutMs: 600_000));
            if (run.ExitCode != 0)
            {
                throw new InvalidOperationException(
                    $"the store tests need PostgreSQL: {Variable} is unset and {script} failed (exit {run.ExitCode}):\n{run.Stderr}");
            }
            cs = run.Stdout.Trim().Split('\n')[^1].Trim();
            source = script;
        }
        try
        {
            await using var c = new NpgsqlConnection(cs);
            await c.OpenAsync();
        }
        catch (Exception e) when (e is NpgsqlException or ArgumentException or InvalidOperationException or TimeoutException)
        {
            throw new InvalidOperationException(
                $"the store tests need PostgreSQL, which cannot be reached with the connection string from {source} " +
                $"({Redacted(cs)}): {e.Message}. Start it with scripts/postgres.sh and export {Variable}=<its output> " +
                "(scripts/test.sh does both).", e);
        }
        return cs;
    }

    private static string Redacted(string cs)
    {
        try
        {
            return new NpgsqlConnectionStringBuilder(cs) { Password = null }.ConnectionString;
        }
        catch (ArgumentException)
        {
            return "an unparsable connection string";
        }
    }

    private static string RepositoryRoot([CallerFilePath] string source = "")
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Path.GetDirectoryName(source) ?? "" })
        {
            for (var dir = string.IsNullOrEmpty(start) ? null : new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Rempart.slnx")))
                {
                    return dir.FullName;
                }
            }
        }
        throw new DirectoryNotFoundException("the repository (Rempart.slnx) was not found above the tests, so scripts/postgres.sh cannot be run");
    }
}

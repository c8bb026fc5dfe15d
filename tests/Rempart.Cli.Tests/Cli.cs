using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Cli.Tests;

/// <summary>Runs the CLI through its one entry point, scripts/rempart, as a user would.</summary>
public static class Cli
{
    public static string RepoRoot { get; } = FindRoot();

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Rempart.slnx")))
        {
            dir = dir.Parent;
        }
        return dir?.FullName ?? throw new InvalidOperationException("repository root (Rempart.slnx) not found");
    }

    public static Tool.Result Run(params string[] args) => Run(null, args);

    public static Tool.Result Run(IDictionary<string, string>? env, params string[] args) =>
        Tool.Run(Path.Combine(RepoRoot, "scripts", "rempart"), args, env, timeoutMs: 300_000);
}

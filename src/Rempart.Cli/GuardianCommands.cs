using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Rempart.Cli;

/// <summary>
/// <c>rempart guardian serve …</c>: runs the Guardian service (the <c>rempart-guardian</c>
/// executable, with the same options). The CLI does not link the service; it starts it, passes
/// its arguments and environment through, forwards SIGINT/SIGTERM and returns its exit code.
/// </summary>
internal static class GuardianCommands
{
    public static int Serve(string[] rest)
    {
        var (file, prefix) = Locate() ?? throw new UsageException(
            "cannot find the Guardian executable: install rempart-guardian next to rempart or on PATH, set REMPART_GUARDIAN_DLL, or run scripts/rempart-guardian serve");
        var psi = new ProcessStartInfo(file) { UseShellExecute = false };
        foreach (var p in prefix.Append("serve").Concat(rest))
        {
            psi.ArgumentList.Add(p);
        }
        using var child = Process.Start(psi) ?? throw new IOException($"cannot start {file}");
        void Forward(PosixSignalContext ctx)
        {
            ctx.Cancel = true;
            // SIGTERM is the child's orderly shutdown for either signal (Process.Kill would be SIGKILL).
            _ = Kill(child.Id, 15);
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Forward);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Forward);
        child.WaitForExit();
        return child.ExitCode;
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    private static (string File, string[] Prefix)? Locate()
    {
        if (Environment.GetEnvironmentVariable("REMPART_GUARDIAN_DLL") is { Length: > 0 } dll)
        {
            return File.Exists(dll) ? ("dotnet", [dll]) : throw new UsageException($"REMPART_GUARDIAN_DLL={dll}: no such file");
        }
        foreach (var candidate in new[] { Path.Combine(AppContext.BaseDirectory, "rempart-guardian.dll"), Path.Combine(AppContext.BaseDirectory, "..", "guardian", "rempart-guardian.dll") })
        {
            if (File.Exists(candidate))
            {
                return ("dotnet", [Path.GetFullPath(candidate)]);
            }
        }
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var exe = Path.Combine(dir, "rempart-guardian");
            if (File.Exists(exe))
            {
                return (exe, []);
            }
        }
        return null;
    }
}

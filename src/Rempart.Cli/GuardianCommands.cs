using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Rempart.Host.Guardian;
using Rempart.KeyProtection;

namespace Rempart.Cli;

/// <summary>
/// <c>rempart guardian serve …</c>: runs the Guardian service (the <c>rempart-guardian</c>
/// executable, with the same options). The CLI does not link the service; it starts it, passes
/// its arguments and environment through, forwards SIGINT/SIGTERM and returns its exit code.
/// </summary>
internal static class GuardianCommands
{
    public static int Serve(string[] rest) => RunService("rempart-guardian", "guardian", "REMPART_GUARDIAN_DLL", rest);

    /// <summary>Starts a service executable (rempart-guardian, rempart-host) with <c>serve</c> and the given options.</summary>
    internal static int RunService(string exe, string buildDir, string envVar, string[] rest)
    {
        var (file, prefix) = Locate(exe, buildDir, envVar) ?? throw new UsageException(
            $"cannot find {exe}: install it next to rempart or on PATH, set {envVar}, or run scripts/{exe} serve");
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

    private static readonly HashSet<string> Flags = ["help"];

    /// <summary><c>rempart guardian metadata</c>: fetches, verifies and saves the Guardian's signed metadata.</summary>
    public static async Task<int> Metadata(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, """
            Usage: rempart guardian metadata --guardian URL [--guardian-fingerprint HEX] [--out FILE] [--format text|json]

            Fetches the Guardian's metadata (its id, name, public encryption keys and signing key, signed),
            checks the signature, and prints its fingerprint (SHA-256 of the signing key) — compare it with
            the one the Guardian's operator gives you out of band, then build key protectors offline with
            'rempart kp create --guardian FILE --guardian-fingerprint HEX'. --out writes the document as is.

            """))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var outFile = a.Get("out");
        using var guardian = HostCommands.Connect(a, admin: false);
        a.EnsureAllUsed();
        try
        {
            var text = await guardian.GetTextAsync("v1/guardian/metadata");
            var metadata = GuardianMetadata.Parse(text);
            if (outFile is not null)
            {
                await File.WriteAllTextAsync(outFile, text);
            }
            var summary = new JsonObject
            {
                ["guardianId"] = metadata.GuardianId,
                ["name"] = metadata.Name,
                ["fingerprint"] = metadata.Fingerprint,
                ["activeKey"] = metadata.ActiveKey.Kid,
                ["keys"] = new JsonArray(metadata.EncryptionKeys.Select(k => (JsonNode)new JsonObject { ["kid"] = k.Kid, ["status"] = k.Status.ToString().ToLowerInvariant() }).ToArray()),
                ["issuedAt"] = metadata.IssuedAt,
            };
            HostCommands.Report(format, summary,
                $"Guardian {metadata.GuardianId} ({metadata.Name})\n  fingerprint {metadata.Fingerprint}\n  active key  {metadata.ActiveKey.Kid}"
                + (outFile is null ? "" : $"\n  written to  {outFile}"));
            return Program.Ok;
        }
        catch (GuardianException e)
        {
            return HostCommands.GuardianError(e);
        }
        catch (KeyProtectorException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return Program.Invalid;
        }
        catch (GuardianMetadataException e)
        {
            Console.Error.WriteLine($"error: {e.Id}: {e.Message}");
            return Program.Invalid;
        }
    }

    /// <summary><c>rempart kp releases KP</c>: the audit trail of one VM's key.</summary>
    public static async Task<int> Releases(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, """
            Usage: rempart kp releases KP|--vm-id ID --guardian URL --token-file FILE [--format text|json]

            Where and when this VM's key was released — host, group, health token, policy version,
            release id — and every refused request with its reason, from the Guardian's hash-chained
            audit log. Needs a tenant, auditor or fabric-admin API token.

            """))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var vmId = a.Get("vm-id");
        if (vmId is null)
        {
            var file = a.Positionals.Count == 1 ? a.Positionals[0] : throw new UsageException("give one key protector file (or --vm-id ID)");
            var bytes = File.Exists(file) ? await File.ReadAllBytesAsync(file) : throw new UsageException($"{file}: no such file");
            try
            {
                vmId = KeyProtector.Parse(bytes).VmId;
            }
            catch (KeyProtectorException e)
            {
                throw new UsageException($"{file}: {e.Message}");
            }
        }
        using var guardian = HostCommands.Connect(a, admin: true);
        a.EnsureAllUsed();
        try
        {
            var list = await guardian.GetAsync($"v1/releases?vmId={Uri.EscapeDataString(vmId)}");
            var lines = list.AsArray().Select(r => r!["outcome"]!.GetValue<string>() == "released"
                ? $"{r["at"]}  released  to {r["host"]} (group {r["group"]})  release {r["releaseId"]}  token {r["jti"]}  policy {r["policy"]} v{r["policyVersion"]}"
                : $"{r["at"]}  refused   {r["host"] ?? "-"}  {r["reason"]}").ToList();
            HostCommands.Report(format, list, lines.Count == 0 ? $"no release of {vmId}'s key on record" : string.Join("\n", lines));
            return Program.Ok;
        }
        catch (GuardianException e)
        {
            return HostCommands.GuardianError(e);
        }
    }

    /// <summary><c>rempart kp rewrap KP --out NEW</c>: after a Guardian key rotation, the KP re-wrapped for the active key.</summary>
    public static async Task<int> Rewrap(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, """
            Usage: rempart kp rewrap KP --out NEW_KP --guardian URL --token-file FILE [--format text|json]

            After the Guardian's encryption key was rotated: asks the Guardian to add a wrap for its
            active key and drop its older ones (the VM key never leaves the Guardian; the owner wrap
            and other Guardians' wraps are kept). Write NEW_KP next to the VM, then the old key can be
            retired. Exit 0 also when nothing had to change (the file is then a copy).

            """))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var file = a.Positionals.Count == 1 ? a.Positionals[0] : throw new UsageException("give one key protector file");
        var outFile = a.Require("out", "where to write the re-wrapped key protector");
        using var guardian = HostCommands.Connect(a, admin: true);
        a.EnsureAllUsed();
        var text = File.Exists(file) ? await File.ReadAllTextAsync(file) : throw new UsageException($"{file}: no such file");
        try
        {
            var result = await guardian.PostJsonAsync("v1/keyprotectors/rewrap", new { keyProtector = text });
            var kp = KeyProtector.Parse(System.Text.Encoding.UTF8.GetBytes(result["keyProtector"]!.GetValue<string>()));
            await File.WriteAllTextAsync(outFile, kp.ToJson());
            var changed = result["changed"]!.GetValue<bool>();
            HostCommands.Report(format, new JsonObject { ["changed"] = changed, ["kpId"] = kp.KpId, ["out"] = outFile },
                changed ? $"{kp.KpId}: re-wrapped for the Guardian's active key, written to {outFile}" : $"{kp.KpId}: already wrapped for the active key; copied to {outFile}");
            return Program.Ok;
        }
        catch (GuardianException e)
        {
            return HostCommands.GuardianError(e);
        }
    }

    private static (string File, string[] Prefix)? Locate(string exe, string buildDir, string envVar)
    {
        if (Environment.GetEnvironmentVariable(envVar) is { Length: > 0 } dll)
        {
            return File.Exists(dll) ? ("dotnet", [dll]) : throw new UsageException($"{envVar}={dll}: no such file");
        }
        foreach (var candidate in new[] { Path.Combine(AppContext.BaseDirectory, exe + ".dll"), Path.Combine(AppContext.BaseDirectory, "..", buildDir, exe + ".dll") })
        {
            if (File.Exists(candidate))
            {
                return ("dotnet", [Path.GetFullPath(candidate)]);
            }
        }
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var path = Path.Combine(dir, exe);
            if (File.Exists(path))
            {
                return (path, []);
            }
        }
        return null;
    }
}

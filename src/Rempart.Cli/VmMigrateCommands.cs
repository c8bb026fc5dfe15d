using System.Text.Json.Nodes;
using Rempart.Host.Agent;

namespace Rempart.Cli;

/// <summary>
/// <c>rempart vm migrate NAME --to ADDR:PORT</c>, asked of the source host's agent (docs/migration.md).
/// Exit codes as the other vm verbs: 0 moved, 1 refused (an unhealthy or disallowed destination,
/// the Guardian's refusal; the VM keeps running here), 2 usage, 3 failed or the agent unreachable.
/// </summary>
internal static class VmMigrateCommands
{
    private static readonly HashSet<string> Flags = ["help"];

    private const string Help = """
        Usage: rempart vm migrate NAME --to ADDR:PORT [--socket PATH] [--format text|json]

          Moves running VM NAME live to the host whose agent listens for migrations on ADDR:PORT
          (rempart host serve --migration-listen). The Guardian must find both hosts healthy now and
          both host groups allowed by the VM's key protector; it releases the VM's key to each host
          separately. The channel's keys come from shares only the two hosts' TPMs can open; the
          bundle, QEMU's migration stream (RAM, devices, vTPM state, UEFI variables) and the disks'
          last changes travel encrypted (AES-256-GCM). Any refusal or failure before the destination
          has loaded the state leaves the VM running here, intact.

        """;

    public static async Task<int> Run(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, Help))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var socket = a.Get("socket") ?? Environment.GetEnvironmentVariable("REMPART_AGENT_SOCKET") ?? AgentSocket.DefaultPath;
        var p = a.Positionals;
        var to = a.Get("to") ?? throw new UsageException("usage: rempart vm migrate NAME --to ADDR:PORT (the destination agent's --migration-listen)");
        if (p.Count != 1)
        {
            throw new UsageException("usage: rempart vm migrate NAME --to ADDR:PORT");
        }
        a.EnsureAllUsed();
        try
        {
            using var http = AgentSocket.Client(socket);
            http.Timeout = Timeout.InfiniteTimeSpan; // progress is shown; the agent bounds each step
            return await VmCommands.StreamAsync(http, $"v1/vms/{p[0]}/migrate", new JsonObject { ["to"] = to }, "migration", format,
                m => $"{m["name"]} now runs on host {m["destinationHost"]} ({m["destination"]}), migration {m["migrationId"]}: "
                    + $"{m["streamBytes"]} bytes of QEMU state and {m["fileBytes"]} bytes of files sent encrypted, guest paused {m["downtimeMs"]} ms, {m["totalMs"]} ms in all");
        }
        catch (HttpRequestException e)
        {
            Console.Error.WriteLine($"error: agent.unreachable: cannot reach the host agent at {socket}: {e.Message} (is 'rempart host serve' running, and are you root?)");
            return Program.Failure;
        }
    }
}

using System.Text.Json.Nodes;
using Rempart.Host.Agent;

namespace Rempart.Cli;

/// <summary><c>rempart host serve</c> (runs the host agent) and <c>rempart host status</c> (asks it, over its root-only unix socket).</summary>
internal static class AgentCommands
{
    private static readonly HashSet<string> Flags = ["help"];

    public static int Serve(string[] rest) => GuardianCommands.RunService("rempart-host", "host-agent", "REMPART_HOST_DLL", rest);

    public static async Task<int> Status(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, """
            Usage: rempart host status [--socket PATH] [--format text|json]

            Asks the local host agent (rempart host serve) for this host's state: host id, attestation
            state, last attestation, health token expiry, last error. The socket (default
            /run/rempart/agent.sock, or REMPART_AGENT_SOCKET) is root-only. Exit 0 when the host is
            affirmed, 1 otherwise, 3 when the agent cannot be reached.

            """))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var socket = a.Get("socket") ?? Environment.GetEnvironmentVariable("REMPART_AGENT_SOCKET") ?? AgentSocket.DefaultPath;
        a.EnsureAllUsed();
        JsonNode status;
        try
        {
            using var http = AgentSocket.Client(socket);
            status = JsonNode.Parse(await http.GetStringAsync("v1/status"))!;
        }
        catch (HttpRequestException e)
        {
            Console.Error.WriteLine($"error: agent.unreachable: cannot reach the host agent at {socket}: {e.Message} (is 'rempart host serve' running, and are you root?)");
            return Program.Failure;
        }
        var state = status["state"]?.GetValue<string>() ?? "?";
        var text = $"host {status["hostId"] ?? "(not enrolled)"}: {state}"
            + (status["tokenExpiresAt"] is { } exp ? $", health token valid until {exp}" : "")
            + (status["lastAttestedAt"] is { } at ? $"\n  last attestation {at} ({status["attestations"]} so far)" : "")
            + (status["lastError"] is { } err ? $"\n  {err}" : "");
        Console.Out.WriteLine(format == "json" ? status.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) : text);
        return state is "affirming" or "warning" ? Program.Ok : Program.Invalid;
    }
}

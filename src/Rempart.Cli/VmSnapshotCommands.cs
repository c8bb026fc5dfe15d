using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.Host.Agent;

namespace Rempart.Cli;

/// <summary>
/// <c>rempart vm snapshot NAME [--name S]</c>, <c>vm snapshot list NAME</c>, <c>vm snapshot delete NAME S</c>,
/// <c>vm restore NAME S</c>, <c>vm export|import|delete</c> and <c>vm migrate NAME --to ADDR:PORT</c>, asked of the local host agent (docs/host-agent.md). Exit codes as the
/// other vm verbs: 0 done, 1 refused (a tampered or truncated snapshot, an unhealthy host, a VM in the
/// wrong state), 2 usage, 3 the agent cannot be reached or failed.
/// </summary>
internal static class VmSnapshotCommands
{
    private static readonly HashSet<string> Flags = ["help"];

    private const string Help = """
        Usage: rempart vm snapshot NAME [--name S]      [--socket PATH] [--format text|json]
               rempart vm snapshot list NAME
               rempart vm snapshot delete NAME S
               rempart vm restore NAME S
               rempart vm export NAME --out FILE
               rempart vm import FILE
               rempart vm delete NAME
               rempart vm migrate NAME --to ADDR:PORT

          snapshot NAME   fresh release → guest paused → QEMU's migration stream (RAM, devices, vTPM, UEFI
                          variables) sealed as it arrives into snapshots/S/state.sealed; disks (LUKS) and
                          vTPM state (encrypted) copied, variables re-encrypted → guest resumed.
                          S defaults to s-YYYYMMDD-HHMMSS (UTC); names are never reused.
          snapshot list NAME      the VM's snapshots, oldest first
          snapshot delete NAME S  removes snapshot S
          restore NAME S  the VM stopped: fresh release on a healthy host → the sealed state verified whole
                          (a tampered or truncated snapshot is refused before anything starts) → disks, vTPM
                          and variables put back → QEMU fed the verified stream → the guest resumes where it was
          export NAME --out FILE  the VM stopped: its bundle, snapshots included, as one tar (0600; every file in
                          it is encrypted already); FILE must not exist
          import FILE     a bundle exported elsewhere appears under its own name (entries checked first);
                          starting or restoring it here needs this host's own release

        """;

    public static async Task<int> Run(string verb, string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, Help))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var socket = a.Get("socket") ?? Environment.GetEnvironmentVariable("REMPART_AGENT_SOCKET") ?? AgentSocket.DefaultPath;
        var p = a.Positionals;
        try
        {
            using var http = AgentSocket.Client(socket);
            http.Timeout = Timeout.InfiniteTimeSpan; // a snapshot of a large VM takes minutes; progress is shown
            switch (verb, p.Count > 0 ? p[0] : "")
            {
                case ("snapshot", "list"):
                    {
                        var name = Exactly(p, 2, "vm snapshot list NAME")[1];
                        a.EnsureAllUsed();
                        return await VmCommands.ShowAsync(await http.GetAsync($"v1/vms/{name}/snapshots"), format, s => string.Join('\n',
                            new[] { $"{"SNAPSHOT",-24} {"TAKEN",-22} {"STATE BYTES",14} FINGERPRINT" }
                                .Concat(s.AsArray().Select(v => $"{v!["id"],-24} {v["created"]!.GetValue<DateTimeOffset>().ToUniversalTime():yyyy-MM-ddTHH:mm:ssZ} {v["stateBytes"],14} {v["fingerprint"]!.GetValue<string>()[..16]}…"))));
                    }
                case ("snapshot", "delete"):
                    {
                        var args = Exactly(p, 3, "vm snapshot delete NAME S");
                        a.EnsureAllUsed();
                        return await VmCommands.ShowAsync(await http.DeleteAsync($"v1/vms/{args[1]}/snapshots/{args[2]}"), format, s => $"snapshot {s["deleted"]} deleted");
                    }
                case ("snapshot", _):
                    {
                        var name = Exactly(p, 1, "vm snapshot NAME [--name S]")[0];
                        var body = new JsonObject();
                        if (a.Get("name") is { } s)
                        {
                            body["name"] = s;
                        }
                        a.EnsureAllUsed();
                        return await VmCommands.StreamAsync(http, $"v1/vms/{name}/snapshots", body, "snapshot", format,
                            s => $"snapshot {s["id"]} of {s["vm"]}: {s["stateBytes"]} bytes of state sealed ({s["sealedBytes"]} on disk), disks {string.Join(", ", s["disks"]!.AsArray())}\n  fingerprint {s["fingerprint"]}");
                    }
                case ("restore", _):
                    {
                        var args = Exactly(p, 2, "vm restore NAME S");
                        a.EnsureAllUsed();
                        return await VmCommands.StreamAsync(http, $"v1/vms/{args[0]}/snapshots/{args[1]}/restore", new JsonObject(), "status", format,
                            s => $"{s["name"]}: {s["state"]} from snapshot {args[1]} (QEMU pid {s["pid"]}, key release {s["releaseId"]})");
                    }
                case ("export", _):
                    {
                        var name = Exactly(p, 1, "vm export NAME --out FILE")[0];
                        var output = a.Get("out") ?? throw new UsageException("usage: rempart vm export NAME --out FILE");
                        a.EnsureAllUsed();
                        return await VmCommands.ShowAsync(await http.PostAsJsonAsync($"v1/vms/{name}/export", new { path = Path.GetFullPath(output) }), format,
                            s => $"{s["name"]} exported to {s["path"]}: {s["files"]} files, {s["bytes"]} bytes (snapshots: {string.Join(", ", s["snapshots"]!.AsArray())}), sha256 {s["sha256"]}");
                    }
                case ("migrate", _):
                    {
                        var name = Exactly(p, 1, "vm migrate NAME --to ADDR:PORT")[0];
                        var to = a.Get("to") ?? throw new UsageException("usage: rempart vm migrate NAME --to ADDR:PORT (the destination agent's --migration-listen)");
                        a.EnsureAllUsed();
                        return await VmCommands.StreamAsync(http, $"v1/vms/{name}/migrate", new JsonObject { ["to"] = to }, "migration", format,
                            m => $"{m["name"]} now runs on host {m["destinationHost"]} ({m["destination"]}), migration {m["migrationId"]}: "
                                + $"{m["streamBytes"]} bytes of QEMU state and {m["fileBytes"]} bytes of files sent encrypted, guest paused {m["downtimeMs"]} ms, {m["totalMs"]} ms in all");
                    }
                case ("delete", _):
                    {
                        var name = Exactly(p, 1, "vm delete NAME")[0];
                        a.EnsureAllUsed();
                        return await VmCommands.ShowAsync(await http.DeleteAsync($"v1/vms/{name}"), format, s => $"{s["deleted"]} deleted");
                    }
                case ("import", _):
                    {
                        var file = Exactly(p, 1, "vm import FILE")[0];
                        a.EnsureAllUsed();
                        return await VmCommands.ShowAsync(await http.PostAsJsonAsync("v1/vms/import", new { path = Path.GetFullPath(file) }), format,
                            s => $"{s["name"]} imported from {s["path"]}: {s["files"]} files (snapshots: {string.Join(", ", s["snapshots"]!.AsArray())}); vm start or vm restore needs this host's release");
                    }
                default:
                    throw new UsageException($"unknown command 'vm {verb}' (see rempart vm snapshot --help)");
            }
        }
        catch (HttpRequestException e)
        {
            Console.Error.WriteLine($"error: agent.unreachable: cannot reach the host agent at {socket}: {e.Message} (is 'rempart host serve' running, and are you root?)");
            return Program.Failure;
        }
    }

    private static IReadOnlyList<string> Exactly(IReadOnlyList<string> p, int n, string usage) =>
        p.Count == n ? p : throw new UsageException($"usage: rempart {usage}");
}

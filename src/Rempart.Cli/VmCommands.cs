using System.Globalization;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.Host.Agent;

namespace Rempart.Cli;

/// <summary>
/// <c>rempart vm create|start|stop|kill|status|list|console</c> and <c>rempart host audit</c>: the
/// VM lifecycle, asked of the local host agent over its root-only unix socket (virsh's verbs).
/// Exit codes: 0 done, 1 refused (by the Guardian, the agent or the VM's shielding), 2 usage,
/// 3 the agent cannot be reached or failed.
/// </summary>
internal static class VmCommands
{
    private static readonly HashSet<string> Flags = ["help", "accept-restored-state"];
    private static readonly HashSet<string> Repeatable = ["disk"];
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private const string Help = """
        Usage: rempart vm <verb> [NAME] [options] [--socket PATH] [--format text|json]

          create NAME --from IMAGE --kp KP [--image-format raw|qcow2] [--memory MIB] [--cpus N]
                      [--disk ID=IMAGE[:raw|qcow2]]... [--disk ID:SIZE]... [--secure-boot-template snakeoil|microsoft]
              Asks the Guardian for the VM's key (this host must be attested and allowed by the key
              protector), imports IMAGE as the encrypted disk 'system' (LUKS qcow2, AES-256-XTS),
              adds the other disks, creates the UEFI variables from the template (encrypted) and the
              vTPM (swtpm_setup, state encrypted). Shows progress.
          start NAME [--accept-restored-state]
                         fresh health token → key release → swtpm → NVRAM in memory → QEMU (sandboxed, its own uid).
                         Refused (vm.state.rollback) when the UEFI variables or vTPM state are not what the agent
                         last left (an older copy put back); --accept-restored-state accepts them (audited)
          stop NAME [--timeout SECONDS]   ACPI power button, then QMP quit after the timeout (default 60)
          kill NAME      SIGKILL QEMU (the NVRAM is still re-encrypted and the clear copy removed)
          status NAME    state, pid, accelerator, RAM protection, release id
          list           every VM of this host
          console NAME   the serial console of an encryption-supported VM (audited); refused for a shielded VM

        The agent's socket: --socket, REMPART_AGENT_SOCKET, or /run/rempart/agent.sock.

        """;

    public static async Task<int> Run(string verb, string[] argv)
    {
        var a = new Args(argv, Flags, Repeatable);
        if (verb is "--help" or "-h" || Program.ShowHelp(a, Help))
        {
            if (verb is "--help" or "-h")
            {
                Console.Out.Write(Help);
            }
            return Program.Ok;
        }
        var format = a.Format();
        var socket = a.Get("socket") ?? Environment.GetEnvironmentVariable("REMPART_AGENT_SOCKET") ?? AgentSocket.DefaultPath;
        string Name() => a.Positionals.Count == 1 ? a.Positionals[0] : throw new UsageException($"vm {verb} takes one VM name");
        try
        {
            using var http = AgentSocket.Client(socket);
            http.Timeout = Timeout.InfiniteTimeSpan; // create and start report progress; they may take minutes
            switch (verb)
            {
                case "create":
                    {
                        var body = CreateBody(a, Name());
                        a.EnsureAllUsed();
                        return await StreamAsync(http, "v1/vms", body, "status", format, Detail);
                    }
                case "start":
                    {
                        var name = Name();
                        var accept = a.Flag("accept-restored-state");
                        a.EnsureAllUsed();
                        return await StreamAsync(http, $"v1/vms/{name}/start", new JsonObject { ["acceptRestoredState"] = accept }, "status", format, Detail);
                    }
                case "stop" or "kill":
                    {
                        var name = Name();
                        var timeout = a.Get("timeout") is { } t ? ParseInt(t, "--timeout") : 60;
                        a.EnsureAllUsed();
                        var r = await http.PostAsJsonAsync($"v1/vms/{name}/stop", new JsonObject { ["force"] = verb == "kill", ["graceSeconds"] = timeout });
                        return await ShowAsync(r, format, s => Line(s));
                    }
                case "status":
                    {
                        var name = Name();
                        a.EnsureAllUsed();
                        return await ShowAsync(await http.GetAsync($"v1/vms/{name}"), format, s => Detail(s));
                    }
                case "list":
                    {
                        a.EnsureAllUsed();
                        return await ShowAsync(await http.GetAsync("v1/vms"), format, s => string.Join('\n',
                            new[] { $"{"NAME",-24} {"STATE",-12} {"SHIELDING",-22} {"PID",-8} RAM PROTECTION" }
                                .Concat(s.AsArray().Select(v => $"{v!["name"],-24} {v["state"],-12} {v["shielding"],-22} {v["pid"]?.ToString() ?? "-",-8} {v["ramProtection"]?.ToString() ?? "-"}"))));
                    }
                case "console":
                    {
                        var name = Name();
                        a.EnsureAllUsed();
                        return await ConsoleAsync(socket, name);
                    }
                default:
                    throw new UsageException($"unknown command 'vm {verb}' (see rempart vm --help)");
            }
        }
        catch (HttpRequestException e)
        {
            Console.Error.WriteLine($"error: agent.unreachable: cannot reach the host agent at {socket}: {e.Message} (is 'rempart host serve' running, and are you root?)");
            return Program.Failure;
        }
    }

    /// <summary><c>rempart host audit</c>: the agent's hash-chained log of what happened to this host's VMs.</summary>
    public static async Task<int> Audit(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, "Usage: rempart host audit [--socket PATH] [--format text|json]\n\nThe host agent's audit log (VM created, started with release id, stopped, console sessions), its chain checked.\n"))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var socket = a.Get("socket") ?? Environment.GetEnvironmentVariable("REMPART_AGENT_SOCKET") ?? AgentSocket.DefaultPath;
        a.EnsureAllUsed();
        try
        {
            using var http = AgentSocket.Client(socket);
            var doc = JsonNode.Parse(await http.GetStringAsync("v1/audit"))!;
            var broken = doc["brokenAt"];
            if (format == "json")
            {
                Console.Out.WriteLine(doc.ToJsonString(Indented));
            }
            else
            {
                foreach (var rec in doc["records"]!.AsArray())
                {
                    var extra = rec!.AsObject().Where(p => p.Key is not ("seq" or "time" or "event" or "vm" or "prev")).Select(p => $"{p.Key}={p.Value?.ToJsonString().Trim('"')}");
                    Console.Out.WriteLine($"{rec["seq"],5} {rec["time"]} {rec["event"],-20} {rec["vm"]} {string.Join(' ', extra)}");
                }
                Console.Out.WriteLine(broken is null ? "chain: intact" : $"chain: BROKEN at record {broken}");
            }
            return broken is null ? Program.Ok : Program.Invalid;
        }
        catch (HttpRequestException e)
        {
            Console.Error.WriteLine($"error: agent.unreachable: cannot reach the host agent at {socket}: {e.Message}");
            return Program.Failure;
        }
    }

    private static JsonObject CreateBody(Args a, string name)
    {
        var disks = new JsonArray();
        foreach (var d in a.GetAll("disk"))
        {
            int eq = d.IndexOf('='), colon = d.IndexOf(':');
            if (eq > 0)
            {
                var spec = d[(eq + 1)..];
                var fmt = "raw";
                if (spec.EndsWith(":raw", StringComparison.Ordinal) || spec.EndsWith(":qcow2", StringComparison.Ordinal))
                {
                    fmt = spec[(spec.LastIndexOf(':') + 1)..];
                    spec = spec[..spec.LastIndexOf(':')];
                }
                disks.Add(new JsonObject { ["id"] = d[..eq], ["image"] = Path.GetFullPath(spec), ["format"] = fmt });
            }
            else if (colon > 0)
            {
                disks.Add(new JsonObject { ["id"] = d[..colon], ["sizeBytes"] = ParseSize(d[(colon + 1)..]) });
            }
            else
            {
                throw new UsageException($"--disk '{d}': ID=IMAGE[:raw|qcow2] or ID:SIZE (e.g. data:1G)");
            }
        }
        var kpPath = a.Require("kp", "the VM's key protector file (rempart kp create)");
        return new JsonObject
        {
            ["name"] = name,
            ["keyProtector"] = File.ReadAllText(kpPath),
            ["image"] = Path.GetFullPath(a.Require("from", "the image to import as the boot disk")),
            ["imageFormat"] = a.Get("image-format") ?? "raw",
            ["memoryMiB"] = a.Get("memory") is { } m ? ParseInt(m, "--memory") : 512,
            ["cpus"] = a.Get("cpus") is { } c ? ParseInt(c, "--cpus") : 1,
            ["secureBoot"] = a.Get("secure-boot-template") ?? "snakeoil",
            ["disks"] = disks,
        };
    }

    /// <summary>
    /// A long operation: progress lines on stderr, then the <paramref name="resultName"/> object. An
    /// error's exit code follows the status the agent gives it: 1 for a refusal (below 500), 3 for a failure.
    /// </summary>
    internal static async Task<int> StreamAsync(HttpClient http, string path, JsonObject body, string resultName, string format, Func<JsonNode, string> text)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent.Create(body) };
        using var r = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        if (!r.IsSuccessStatusCode)
        {
            return await ShowAsync(r, format, _ => "");
        }
        using var reader = new StreamReader(await r.Content.ReadAsStreamAsync());
        while (await reader.ReadLineAsync() is { } line)
        {
            var o = JsonNode.Parse(line)!;
            if (o["progress"] is { } p)
            {
                Console.Error.WriteLine("  " + p.GetValue<string>());
            }
            else if (o[resultName] is { } s)
            {
                Console.Out.WriteLine(format == "json" ? s.ToJsonString(Indented) : text(s));
                return Program.Ok;
            }
            else if (o["error"] is { } e)
            {
                Console.Error.WriteLine($"error: {e["id"]}: {e["detail"]}");
                return (e["status"]?.GetValue<int>() ?? 500) >= 500 ? Program.Failure : Program.Invalid;
            }
        }
        Console.Error.WriteLine("error: agent.stream: the agent closed the answer before the result (see its log and 'rempart host audit')");
        return Program.Failure;
    }

    /// <summary>A JSON answer (text or <c>--format json</c>), or its RFC 9457 problem: exit 1 below 500, 3 from 500.</summary>
    internal static async Task<int> ShowAsync(HttpResponseMessage r, string format, Func<JsonNode, string> text)
    {
        var body = await r.Content.ReadAsStringAsync();
        if (!r.IsSuccessStatusCode)
        {
            JsonNode? p = null;
            try
            {
                p = JsonNode.Parse(body);
            }
            catch (JsonException)
            {
            }
            var id = p?["title"]?.GetValue<string>() ?? $"http.{(int)r.StatusCode}";
            Console.Error.WriteLine($"error: {id}: {p?["detail"]?.GetValue<string>() ?? body}");
            return (int)r.StatusCode >= 500 ? Program.Failure : Program.Invalid;
        }
        var node = JsonNode.Parse(body)!;
        Console.Out.WriteLine(format == "json" ? node.ToJsonString(Indented) : text(node));
        return Program.Ok;
    }

    private static string Line(JsonNode s) => $"{s["name"]}: {s["state"]}" + (s["note"] is { } n ? $" ({n})" : "");

    private static string Detail(JsonNode s)
    {
        var lines = new List<string>
        {
            $"{s["name"]} ({s["vmId"]}): {s["state"]}, {s["shielding"]}, {s["memoryMiB"]} MiB, {s["cpus"]} vCPU",
            "  disks: " + string.Join(", ", s["disks"]!.AsArray().Select(d => d!.GetValue<string>())),
        };
        if (s["pid"] is { } pid)
        {
            lines.Add($"  QEMU pid {pid}, accelerator {s["accelerator"]}, started {s["startedAt"]}");
        }
        if (s["ramProtection"] is { } rp)
        {
            var limits = s["ramLimits"]?.AsArray().Select(l => l!.GetValue<string>()).ToList() ?? [];
            lines.Add($"  RAM protection: {rp}, memory {(s["memoryLocked"]?.GetValue<bool>() == true ? "locked" : "not locked")}"
                + (limits.Count > 0 ? $" (limits: {string.Join(", ", limits)})" : ""));
        }
        if (s["releaseId"] is { } rel)
        {
            lines.Add($"  key release {rel}");
        }
        if (s["note"] is { } note)
        {
            lines.Add($"  {note}");
        }
        return string.Join('\n', lines);
    }

    private static async Task<int> ConsoleAsync(string agentSocket, string name)
    {
        Stream console;
        try
        {
            console = await ConsoleClient.OpenAsync(agentSocket, name, Environment.GetEnvironmentVariable("SUDO_USER") ?? Environment.UserName);
        }
        catch (ConsoleRefusedException e)
        {
            Console.Error.WriteLine($"error: {e.Id}: {e.Message}");
            return e.Status is >= 400 and < 500 ? Program.Invalid : Program.Failure;
        }
        catch (SocketException e)
        {
            throw new HttpRequestException(e.Message, e);
        }
        await using (console)
        {
            Console.Error.WriteLine($"console of {name} (relayed and recorded by the agent); end with Ctrl-D");
            var fromVm = console.CopyToAsync(Console.OpenStandardOutput());
            var toVm = Console.OpenStandardInput().CopyToAsync(console);
            await Task.WhenAny(fromVm, toVm);
        }
        return Program.Ok;
    }

    private static int ParseInt(string v, string what) =>
        int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0 ? n : throw new UsageException($"{what} '{v}': a positive whole number");

    internal static long ParseSize(string v)
    {
        long mult = 1;
        var s = v;
        if (s.Length > 1 && char.ToUpperInvariant(s[^1]) is 'K' or 'M' or 'G' or 'T')
        {
            mult = char.ToUpperInvariant(s[^1]) switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, _ => 1L << 40 };
            s = s[..^1];
        }
        return long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0 && n <= (1L << 50) / mult
            ? n * mult
            : throw new UsageException($"disk size '{v}': a number with K, M, G or T (e.g. 1G)");
    }
}

using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.Host.Guardian;

namespace Rempart.Cli;

/// <summary>
/// <c>rempart policy create|list|assign|test|baseline</c>: policy documents on the Guardian.
/// <c>test</c> runs a draft against the fleet's stored evidence ("what would fail?");
/// <c>baseline</c> captures one from a reference host.
/// </summary>
internal static class PolicyCommands
{
    private const string Help = """
        Usage: rempart policy create --policy FILE                 store a new policy version (YAML or JSON, docs/policy.md)
               rempart policy list
               rempart policy assign --group G --policy-id ID      the group's hosts are judged by that policy
               rempart policy test --policy FILE [--host H | --all] what would fail? (exit 0 all compliant, 1 otherwise)
               rempart policy baseline --host H [--id ID]          a policy captured from a reference host (YAML on stdout)
        Options: --guardian URL --token-file FILE [--guardian-fingerprint HEX] [--format text|json]

        """;

    public static async Task<int> Run(string verb, string[] argv)
    {
        var a = new Args(argv, new HashSet<string> { "help", "all" });
        if (Program.ShowHelp(a, Help))
        {
            return Program.Ok;
        }
        var format = a.Format();
        using var guardian = HostCommands.Connect(a, admin: true);
        try
        {
            switch (verb)
            {
                case "create":
                {
                    var doc = ReadPolicy(a);
                    a.EnsureAllUsed();
                    var r = await guardian.PostJsonAsync("v1/policies", new { document = doc });
                    Print(format, r, $"stored policy {r["id"]} version {r["version"]} ({r["mode"]})");
                    return Program.Ok;
                }
                case "list":
                {
                    a.EnsureAllUsed();
                    var r = await guardian.GetAsync("v1/policies");
                    Print(format, r, string.Join("\n", r.AsArray().Select(p => $"{p!["id"]}  v{p["version"]}  {p["mode"]}")));
                    return Program.Ok;
                }
                case "assign":
                {
                    var group = a.Require("group", "host group");
                    var id = a.Require("policy-id", "policy id");
                    a.EnsureAllUsed();
                    var r = await guardian.PostJsonAsync($"v1/hostgroups/{Uri.EscapeDataString(group)}/policy", new { policyId = id });
                    Print(format, r, $"host group {group} is judged by policy {id}");
                    return Program.Ok;
                }
                case "test":
                {
                    var doc = ReadPolicy(a);
                    var host = a.Get("host");
                    bool all = a.Flag("all");
                    if (host is null == !all)
                    {
                        throw new UsageException("give --host H or --all");
                    }
                    a.EnsureAllUsed();
                    var r = await guardian.PostJsonAsync("v1/policies/test", new { document = doc, hostId = host });
                    var hosts = r["hosts"]!.AsArray();
                    bool compliant = hosts.All(h => h!["result"]?["compliant"]?.GetValue<bool>() == true);
                    Print(format, r, string.Join("\n", hosts.Select(h => HostLine(h!))));
                    return compliant ? Program.Ok : Program.Invalid;
                }
                default:
                {
                    var host = a.Require("host", "reference host id");
                    var id = a.Get("id") ?? "baseline";
                    a.EnsureAllUsed();
                    var yaml = await guardian.PostForTextAsync("v1/policies/baseline", new { hostId = host, id });
                    Console.Out.Write(yaml);
                    return Program.Ok;
                }
            }
        }
        catch (GuardianException e)
        {
            Console.Error.WriteLine($"error: {e.Id}: {e.Message}");
            return e.Status == 0 || e.Status >= 500 ? Program.Failure : Program.Invalid;
        }
    }

    private static string ReadPolicy(Args a)
    {
        var path = a.Require("policy", "policy file (YAML or JSON)");
        return File.Exists(path) ? File.ReadAllText(path) : throw new UsageException($"--policy {path}: no such file");
    }

    private static string HostLine(JsonNode h)
    {
        var name = $"{h["hostId"]} ({h["hostname"]})";
        if (h["error"] is { } e)
        {
            return $"{name}: cannot evaluate: {e}";
        }
        var failures = h["result"]!["failures"]!.AsArray();
        return failures.Count == 0
            ? $"{name}: compliant"
            : $"{name}: would fail\n" + string.Join("\n", failures.Select(f => $"  {f!["id"]}: {f["message"]} (expected {f["expected"]}; actual {f["actual"]})"));
    }

    private static void Print(string format, JsonNode json, string text) =>
        Console.Out.WriteLine(format == "json" ? json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) : text);
}

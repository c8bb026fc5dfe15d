using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.Attestation.Protocol;
using Rempart.Host.Attestation;
using Rempart.Host.Guardian;

namespace Rempart.Cli;

/// <summary>
/// <c>rempart host attest</c> (host side: enrol the first time, then attest once) and the admin
/// verbs <c>host list|show|approve</c>, <c>hostgroup create|list</c>.
/// </summary>
internal static class HostCommands
{
    private static readonly HashSet<string> Flags = ["help", "no-auto-approve"];

    private const string ConnectionHelp = """
          --guardian URL              the Guardian (or REMPART_GUARDIAN); https, or http on loopback only
          --guardian-fingerprint HEX  pin the Guardian's TLS certificate (SHA-256, printed at its first start)
        """;

    internal static GuardianClient Connect(Args a, bool admin)
    {
        var url = a.Get("guardian") ?? Environment.GetEnvironmentVariable("REMPART_GUARDIAN")
            ?? throw new UsageException("missing --guardian URL (or REMPART_GUARDIAN)");
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
        {
            throw new UsageException($"--guardian '{url}' is not an http(s) URL");
        }
        if (!uri.AbsolutePath.EndsWith('/'))
        {
            uri = new Uri(uri + "/");
        }
        var pin = a.Get("guardian-fingerprint") ?? Environment.GetEnvironmentVariable("REMPART_GUARDIAN_FINGERPRINT");
        string? token = null;
        if (admin)
        {
            var file = a.Get("token-file") ?? Environment.GetEnvironmentVariable("REMPART_GUARDIAN_TOKEN_FILE")
                ?? throw new UsageException("missing --token-file FILE (an API token; the admin's is DATA/admin-token on the Guardian)");
            token = File.Exists(file) ? File.ReadAllText(file).Trim() : throw new UsageException($"--token-file {file}: no such file");
        }
        try
        {
            return new GuardianClient(uri, pin, token);
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message);
        }
    }

    public static async Task<int> Attest(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, $"""
            Usage: rempart host attest --guardian URL --tpm ADDR [--eventlog FILE] [--state DIR] [--hostname NAME] [--format text|json]

            The host side of attestation, once: enrols this host the first time (EK certificate, AK,
            MakeCredential/ActivateCredential; the host then waits for an admin's approval), then asks
            for a nonce, quotes all PCRs, creates and certifies a binding key, sends the event log, and
            prints the Guardian's verdict. Exit 0 affirming, 1 refused or pending, 3 unreachable.
            {ConnectionHelp}  --eventlog FILE             default /sys/kernel/security/tpm0/binary_bios_measurements
              --state DIR                 where the host id is kept (default REMPART_HOST_STATE or /var/lib/rempart/host)

            """))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var stateDir = a.Get("state") ?? Environment.GetEnvironmentVariable("REMPART_HOST_STATE") ?? "/var/lib/rempart/host";
        var logPath = a.Get("eventlog") ?? "/sys/kernel/security/tpm0/binary_bios_measurements";
        var hostname = a.Get("hostname") ?? Environment.MachineName;
        using var guardian = Connect(a, admin: false);
        using var tpm = TpmCommands.Open(a);
        a.EnsureAllUsed();
        if (!File.Exists(logPath))
        {
            throw new UsageException($"event log {logPath}: no such file (pass --eventlog)");
        }
        var log = File.ReadAllBytes(logPath);
        Directory.CreateDirectory(stateDir);
        var statePath = Path.Combine(stateDir, "host.json");
        string? hostId = File.Exists(statePath) ? JsonNode.Parse(File.ReadAllText(statePath))?["hostId"]?.GetValue<string>() : null;
        try
        {
            if (hostId is null)
            {
                var challenge = await guardian.StartEnrolmentAsync(new HostIdentity(tpm).BuildRequest(hostname));
                var enrolled = await guardian.ActivateAsync(challenge.EnrolmentId, new CredentialActivator(tpm).Answer(challenge));
                hostId = enrolled.HostId;
                File.WriteAllText(statePath, new JsonObject { ["hostId"] = hostId }.ToJsonString());
                if (enrolled.State == "pending")
                {
                    Report(format, new JsonObject { ["hostId"] = hostId, ["status"] = "pending" },
                        $"enrolled as {hostId}: pending until an admin approves it (rempart host approve {hostId} --group G)");
                    return Program.Invalid;
                }
            }
            var nonce = await guardian.NonceAsync(hostId);
            var evidence = new EvidenceCollector(tpm).Collect(hostId, Convert.FromHexString(nonce.Nonce), log);
            var result = await guardian.AttestAsync(evidence.Evidence);
            var json = JsonSerializer.SerializeToNode(result)!.AsObject();
            json.Remove("token");
            json["hasToken"] = result.Token is not null;
            var text = result.Status == "affirming"
                ? $"{hostId}: affirming, health token valid until {result.ExpiresAt:u}{(result.RebootDetected ? " (reboot detected)" : "")}"
                : $"{hostId}: {result.Status}\n" + string.Join("\n", result.Failures.Select(f => $"  {f.Id}: {f.Message}"));
            Report(format, json, text);
            return result.Status == "affirming" ? Program.Ok : Program.Invalid;
        }
        catch (GuardianException e)
        {
            return GuardianError(e);
        }
    }

    public static async Task<int> Admin(string verb, string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, $"""
            Usage: rempart host list|show ID|approve ID --group G|remove ID   --guardian URL --token-file FILE [--format text|json]
                   rempart hostgroup create NAME [--description D] [--approve-ek-issuer DN] | list   (same options)
                   rempart hostgroup update NAME [--description D] [--approve-ek-issuer DN|--no-auto-approve]
                   rempart hostgroup delete NAME          (refused while hosts are in the group)

            'host remove' revokes the host's health tokens at once; its TPM may enrol again later.
            {ConnectionHelp}  --token-file FILE           an API token (REMPART_GUARDIAN_TOKEN_FILE)

            """))
        {
            return Program.Ok;
        }
        var format = a.Format();
        string Arg(string what) => a.Positionals.Count == 1 ? a.Positionals[0] : throw new UsageException($"give one {what}");
        using var guardian = Connect(a, admin: true);
        try
        {
            JsonNode result;
            switch (verb)
            {
                case "host list":
                    a.EnsureAllUsed();
                    result = await guardian.GetAsync("v1/hosts");
                    break;
                case "host show":
                    var id = Arg("host id");
                    a.EnsureAllUsed();
                    result = await guardian.GetAsync($"v1/hosts/{Uri.EscapeDataString(id)}");
                    break;
                case "host approve":
                    var hid = Arg("host id");
                    var group = a.Require("group", "the host group to approve it into");
                    a.EnsureAllUsed();
                    result = await guardian.PostJsonAsync($"v1/hosts/{Uri.EscapeDataString(hid)}/approve", new { group });
                    break;
                case "host remove":
                    var rid = Arg("host id");
                    a.EnsureAllUsed();
                    result = await guardian.SendJsonAsync(HttpMethod.Delete, $"v1/hosts/{Uri.EscapeDataString(rid)}", null);
                    break;
                case "hostgroup update":
                    var uname = Arg("group name");
                    var patch = new JsonObject();
                    if (a.Get("description") is { } d)
                    {
                        patch["description"] = d;
                    }
                    if (a.Get("approve-ek-issuer") is { } issuer)
                    {
                        patch["approveEkIssuer"] = issuer;
                    }
                    if (a.Flag("no-auto-approve"))
                    {
                        patch["approveEkIssuer"] = null;
                    }
                    a.EnsureAllUsed();
                    if (patch.Count == 0)
                    {
                        throw new UsageException("nothing to change: give --description, --approve-ek-issuer or --no-auto-approve");
                    }
                    result = await guardian.SendJsonAsync(HttpMethod.Patch, $"v1/hostgroups/{Uri.EscapeDataString(uname)}", patch);
                    break;
                case "hostgroup delete":
                    var dname = Arg("group name");
                    a.EnsureAllUsed();
                    result = await guardian.SendJsonAsync(HttpMethod.Delete, $"v1/hostgroups/{Uri.EscapeDataString(dname)}", null);
                    break;
                case "hostgroup create":
                    var name = Arg("group name");
                    var body = new { name, description = a.Get("description") ?? "", approveEkIssuer = a.Get("approve-ek-issuer") };
                    a.EnsureAllUsed();
                    result = await guardian.PostJsonAsync("v1/hostgroups", body);
                    break;
                default:
                    a.EnsureAllUsed();
                    result = await guardian.GetAsync("v1/hostgroups");
                    break;
            }
            Report(format, result, Text(result));
            return Program.Ok;
        }
        catch (GuardianException e)
        {
            return GuardianError(e);
        }
    }

    private static string Text(JsonNode node) => node switch
    {
        JsonArray arr => arr.Count == 0 ? "(none)" : string.Join("\n", arr.Select(n => Line(n!))),
        _ => Line(node),
    };

    private static string Line(JsonNode n) => n switch
    {
        _ when n["hostname"] is not null => $"{n["id"]}  {n["hostname"]}  {n["state"]}  group={n["group"] ?? "-"}  last={n["lastStatus"] ?? "-"}",
        _ when n["revokedTokens"] is not null => $"{n["id"]}: {n["state"]} ({n["revokedTokens"]} health token(s) revoked)",
        _ when n["deleted"] is not null => $"host group {n["name"]} deleted",
        _ => $"{n["name"]}  {n["description"]}{(n["approveEkIssuer"] is { } i ? $"  auto-approve EK issuer '{i}'" : "")}",
    };

    internal static void Report(string format, JsonNode json, string text) =>
        Console.Out.WriteLine(format == "json" ? json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) : text);

    internal static int GuardianError(GuardianException e)
    {
        Console.Error.WriteLine($"error: {e.Id}: {e.Message}");
        return e.Status == 0 ? Program.Failure : e.Status is 401 or 403 or 404 or 409 or 400 ? Program.Invalid : Program.Failure;
    }
}

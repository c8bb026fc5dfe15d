using System.Text.Json.Nodes;
using Rempart.Host.Guardian;
using Rempart.Tpm.Structures;

namespace Rempart.Cli;

/// <summary>
/// Fabric-admin verbs beyond hosts and groups: allowing TPMs that have no EK certificate
/// (<c>host allow-ek|disallow-ek|allowed-eks</c>) and API tokens (<c>token create|list|revoke</c>).
/// </summary>
internal static class FabricCommands
{
    private static readonly HashSet<string> Flags = ["help"];

    private const string Help = """
        Usage: rempart host allow-ek --ek-public FILE [--comment TEXT]   --guardian URL --token-file FILE [--format text|json]
               rempart host disallow-ek EK_NAME
               rempart host allowed-eks
               rempart token create NAME --role fabric-admin|tenant|auditor [--out FILE]
               rempart token list
               rempart token revoke ID

        allow-ek: a TPM without EK certificate can enrol only after an admin allows its EK. FILE is
        the EK's TPM2B_PUBLIC ('rempart tpm ek --out FILE' on the host, or tpm2_createek -u FILE);
        get it from the machine itself, out of band. Allowing does not approve: the host still waits
        as pending for 'rempart host approve'. disallow-ek stops new enrolments of that EK; hosts
        already enrolled with it stay until 'rempart host remove'.

        token create prints the new token once (or writes it to a 0600 --out FILE); only its hash
        is kept by the Guardian. The last fabric-admin token cannot be revoked.

        """;

    public static async Task<int> Run(string verb, string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, Help))
        {
            return Program.Ok;
        }
        var format = a.Format();
        string Arg(string what) => a.Positionals.Count == 1 ? a.Positionals[0] : throw new UsageException($"give one {what}");
        using var guardian = HostCommands.Connect(a, admin: true);
        try
        {
            JsonNode result;
            string text;
            switch (verb)
            {
                case "host allow-ek":
                    var file = a.Require("ek-public", "the EK's TPM2B_PUBLIC file");
                    var comment = a.Get("comment") ?? "";
                    a.EnsureAllUsed();
                    var bytes = File.Exists(file) ? File.ReadAllBytes(file) : throw new UsageException($"--ek-public {file}: no such file");
                    var ek = TpmtPublic.ParseSized(bytes);
                    result = await guardian.PostJsonAsync("v1/ek-allowlist", new { ekPublic = Convert.ToBase64String(bytes), comment });
                    text = $"EK {result["ekName"]} ({ek.Type}) allowed to enrol without certificate";
                    break;
                case "host disallow-ek":
                    var name = Arg("EK name (hex, from 'rempart host allowed-eks')");
                    a.EnsureAllUsed();
                    result = await guardian.SendJsonAsync(HttpMethod.Delete, $"v1/ek-allowlist/{Uri.EscapeDataString(name)}", null);
                    text = $"EK {name} no longer allowed";
                    break;
                case "host allowed-eks":
                    a.EnsureAllUsed();
                    result = await guardian.GetAsync("v1/ek-allowlist");
                    text = Lines(result, n => $"{n["ekName"]}  {n["allowedAt"]}  {n["comment"]}");
                    break;
                case "token create":
                    var tname = Arg("token name");
                    var role = a.Require("role", "fabric-admin, tenant or auditor");
                    var outFile = a.Get("out");
                    a.EnsureAllUsed();
                    result = await guardian.PostJsonAsync("v1/apitokens", new { name = tname, role });
                    if (outFile is not null)
                    {
                        await using (var f = new FileStream(outFile, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite }))
                        {
                            await f.WriteAsync(System.Text.Encoding.ASCII.GetBytes(result["token"]!.GetValue<string>() + "\n"));
                        }
                        result.AsObject().Remove("token");
                        text = $"token {result["id"]} ({role}) written to {outFile}";
                    }
                    else
                    {
                        text = $"token {result["id"]} ({role}): {result["token"]}\n(shown once; the Guardian keeps only its hash)";
                    }
                    break;
                case "token list":
                    a.EnsureAllUsed();
                    result = await guardian.GetAsync("v1/apitokens");
                    text = Lines(result, n => $"{n["id"]}  {n["name"]}  {n["role"]}  {n["createdAt"]}");
                    break;
                default:
                    var id = Arg("token id");
                    a.EnsureAllUsed();
                    result = await guardian.SendJsonAsync(HttpMethod.Delete, $"v1/apitokens/{Uri.EscapeDataString(id)}", null);
                    text = $"token {id} revoked";
                    break;
            }
            HostCommands.Report(format, result, text);
            return Program.Ok;
        }
        catch (GuardianException e)
        {
            return HostCommands.GuardianError(e);
        }
    }

    private static string Lines(JsonNode node, Func<JsonNode, string> line) =>
        node is JsonArray { Count: > 0 } arr ? string.Join("\n", arr.Select(n => line(n!))) : "(none)";
}

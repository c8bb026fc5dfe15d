using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.Host.Guardian;

namespace Rempart.Cli;

/// <summary>
/// <c>rempart audit verify</c> (the Guardian checks its whole hash chain; exit 1 names the first
/// record where it breaks) and <c>rempart audit export</c> (the log as JSON lines, one record per
/// line, with the exact hashed fields so it can be re-verified offline).
/// </summary>
internal static class AuditCommands
{
    private const int Page = 1000;

    private static readonly HashSet<string> Flags = ["help"];

    private const string Help = """
        Usage: rempart audit verify --guardian URL --token-file FILE [--format text|json]
               rempart audit export --guardian URL --token-file FILE [--from SEQ]

        verify: the Guardian recomputes the hash chain of its whole audit log. Exit 0 intact (the
                head seq and hash are printed: keep them elsewhere to detect a later truncation),
                1 broken (the first bad seq is named), 3 unreachable.
        export: every record from SEQ (default 1) to stdout, one JSON object per line:
                {seq, at, kind, subject, dataJson, prevHash, hash} (hashes in base64).

          --guardian URL              the Guardian (or REMPART_GUARDIAN); https, or http on loopback only
          --guardian-fingerprint HEX  pin the Guardian's TLS certificate
          --token-file FILE           an API token, fabric-admin or auditor (REMPART_GUARDIAN_TOKEN_FILE)

        """;

    public static async Task<int> Run(string verb, string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, Help))
        {
            return Program.Ok;
        }
        var format = verb == "verify" ? a.Format() : "json";
        long from = 1;
        if (verb == "export" && a.Get("from") is { } f && (!long.TryParse(f, System.Globalization.NumberStyles.None, null, out from) || from < 1))
        {
            throw new UsageException($"--from '{f}' is not a sequence number (1 or more)");
        }
        if (a.Positionals.Count > 0)
        {
            throw new UsageException($"unexpected argument '{a.Positionals[0]}' (see rempart audit {verb} --help)");
        }
        using var guardian = HostCommands.Connect(a, admin: true);
        a.EnsureAllUsed();
        try
        {
            return verb == "verify" ? await VerifyAsync(guardian, format) : await ExportAsync(guardian, from);
        }
        catch (GuardianException e)
        {
            Console.Error.WriteLine($"error: {e.Id}: {e.Message}");
            return e.Status is 400 or 401 or 403 or 404 ? Program.Invalid : Program.Failure;
        }
    }

    private static async Task<int> VerifyAsync(GuardianClient guardian, string format)
    {
        var v = await guardian.GetAsync("v1/audit/verify");
        bool ok = v["ok"]?.GetValue<bool>() == true;
        var records = v["records"]?.GetValue<long>() ?? 0;
        if (format == "json")
        {
            Console.Out.WriteLine(v.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        else if (ok)
        {
            Console.Out.WriteLine(records == 0
                ? "audit log intact: empty"
                : $"audit log intact: {records} records, head seq {v["headSeq"]} hash {v["headHash"]}");
        }
        else
        {
            Console.Out.WriteLine($"audit log BROKEN: the hash chain does not hold at seq {v["firstBadSeq"]} ({records} records)");
        }
        return ok ? Program.Ok : Program.Invalid;
    }

    private static async Task<int> ExportAsync(GuardianClient guardian, long from)
    {
        using var stdout = new StreamWriter(Console.OpenStandardOutput(), new UTF8Encoding(false)) { NewLine = "\n" };
        long? next = from;
        while (next is { } seq)
        {
            var page = await guardian.GetAsync($"v1/audit?from={seq}&max={Page}");
            foreach (var record in page["records"]?.AsArray() ?? [])
            {
                await stdout.WriteLineAsync(record!.ToJsonString());
            }
            next = page["next"] is JsonValue n ? n.GetValue<long>() : null;
        }
        return Program.Ok;
    }
}

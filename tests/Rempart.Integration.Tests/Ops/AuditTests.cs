using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Microsoft.Data.Sqlite;
using Rempart.Guardian.Storage;

namespace Rempart.Integration.Tests.Ops;

/// <summary>
/// The audit API and <c>rempart audit verify|export</c> on a live Guardian, then after a row was
/// changed behind its back in the SQLite file.
/// </summary>
public sealed class AuditTests : IAsyncLifetime
{
    private GuardianFixture _g = null!;

    public async Task InitializeAsync()
    {
        _g = await GuardianFixture.StartAsync(trustSwtpmCa: false);
        foreach (var name in new[] { "alpha", "beta", "gamma" })
        {
            await _g.CreateGroupAsync(name); // one group.saved record each
        }
    }

    public Task DisposeAsync() => _g.DisposeAsync().AsTask();

    private string[] Connection => ["--guardian", _g.Url.ToString(), "--token-file", Path.Combine(_g.DataDir, "admin-token")];

    [Fact]
    public async Task The_audit_API_pages_and_verifies_and_needs_a_token()
    {
        Assert.Equal(HttpStatusCode.Unauthorized, (await _g.Http.GetAsync("v1/audit")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await _g.Http.GetAsync("v1/audit/verify")).StatusCode);

        var verify = (await _g.Admin.GetFromJsonAsync<JsonObject>("v1/audit/verify"))!;
        Assert.True(verify["ok"]!.GetValue<bool>(), verify.ToJsonString());
        Assert.Equal(3, verify["records"]!.GetValue<long>());
        Assert.Null(verify["firstBadSeq"]);
        Assert.Equal(3, verify["headSeq"]!.GetValue<long>());

        var page = (await _g.Admin.GetFromJsonAsync<JsonObject>("v1/audit?from=2&max=1"))!;
        var only = page["records"]!.AsArray().Single()!;
        Assert.Equal((2, "group.saved", "beta"), (only["seq"]!.GetValue<long>(), (string?)only["kind"], (string?)only["subject"]));
        Assert.Equal(32, Convert.FromBase64String(only["hash"]!.GetValue<string>()).Length);
        Assert.Equal(3, page["next"]!.GetValue<long>());
        var last = (await _g.Admin.GetFromJsonAsync<JsonObject>("v1/audit?from=3&max=10"))!;
        Assert.Null(last["next"]);

        foreach (var bad in new[] { "v1/audit?max=0", "v1/audit?max=1001", "v1/audit?from=0" })
        {
            var r = await _g.Admin.GetAsync(bad);
            Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
            Assert.Equal("audit.query", (await r.Content.ReadFromJsonAsync<JsonObject>())!["title"]!.GetValue<string>());
        }
    }

    [Fact]
    public async Task The_CLI_exports_JSON_lines_and_verify_exits_1_naming_the_seq_after_a_row_is_tampered_with()
    {
        var ok = OpsSupport.Cli(["audit", "verify", .. Connection]).Ok();
        Assert.Contains("intact: 3 records", ok.Stdout, StringComparison.Ordinal);

        var export = OpsSupport.Cli(["audit", "export", .. Connection]).Ok();
        var lines = export.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, lines.Length);
        var prev = AuditChain.Genesis;
        foreach (var (line, seq) in lines.Select((l, i) => (l, i + 1L)))
        {
            // One JSON object per line, re-verifiable offline from its exact fields.
            var r = JsonNode.Parse(line)!.AsObject();
            Assert.Equal(seq, r["seq"]!.GetValue<long>());
            var hash = AuditChain.ComputeHash(prev, seq, r["at"]!.GetValue<DateTimeOffset>(), r["kind"]!.GetValue<string>(),
                r["subject"]!.GetValue<string>(), r["dataJson"]!.GetValue<string>());
            Assert.Equal(Convert.ToBase64String(hash), r["hash"]!.GetValue<string>());
            prev = hash;
        }
        var from2 = OpsSupport.Cli(["audit", "export", .. Connection, "--from", "2"]).Ok();
        Assert.Equal([2L, 3L], from2.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!["seq"]!.GetValue<long>()));

        // Someone with write access to the database rewrites record 2.
        await using (var db = new SqliteConnection($"Data Source={Path.Combine(_g.DataDir, SqliteGuardianStore.FileName)}"))
        {
            await db.OpenAsync();
            await using var cmd = db.CreateCommand();
            cmd.CommandText = "UPDATE audit_log SET data_json = '{\"ApproveEkIssuer\":\"CN=attacker\"}' WHERE seq = 2";
            Assert.Equal(1, await cmd.ExecuteNonQueryAsync());
        }
        var broken = OpsSupport.Cli(["audit", "verify", .. Connection]);
        Assert.True(broken.ExitCode == 1, $"exit {broken.ExitCode}\n{broken.Stdout}\n{broken.Stderr}");
        Assert.Contains("does not hold at seq 2 ", broken.Stdout, StringComparison.Ordinal);
        var json = JsonNode.Parse(OpsSupport.Cli(["audit", "verify", .. Connection, "--format", "json"]).Stdout)!;
        Assert.Equal((false, 2L, 3L), (json["ok"]!.GetValue<bool>(), json["firstBadSeq"]!.GetValue<long>(), json["records"]!.GetValue<long>()));
    }
}

using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Rempart.Host.Qemu;

namespace Rempart.Host.Tests.Qemu;

public sealed class QmpClientTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private static byte[] Ok(string line) => FakeQmpServer.Return(line);

    [Fact]
    public async Task Greeting_capabilities_and_commands_matched_by_id()
    {
        await using var server = new FakeQmpServer(line => FakeQmpServer.CommandOf(line) switch
        {
            "query-status" => FakeQmpServer.Return(line, """{"status": "running", "singlestep": false, "running": true}"""),
            _ => Ok(line),
        });
        await using var qmp = await QmpClient.ConnectAsync(server.Path, Timeout);
        Assert.Equal(new QemuVersion(7, 2, 22), qmp.Version);
        var status = await qmp.ExecuteAsync("query-status");
        Assert.Equal("running", status!["status"]!.GetValue<string>());
        await qmp.ExecuteAsync("stop", new JsonObject());
        var sent = server.Received.Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal(["qmp_capabilities", "query-status", "stop"], sent.Select(m => m["execute"]!.GetValue<string>()));
        Assert.Equal(3, sent.Select(m => m["id"]!.GetValue<string>()).Distinct().Count());
        Assert.Null(sent[1]["arguments"]);
        Assert.Equal("{}", sent[2]["arguments"]!.ToJsonString());
    }

    [Fact]
    public async Task An_error_reply_is_a_typed_exception_with_class_and_desc()
    {
        await using var server = new FakeQmpServer(line => FakeQmpServer.CommandOf(line) == "qmp_capabilities" ? Ok(line)
            : Encoding.UTF8.GetBytes($$"""{"error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}, "id": {{FakeQmpServer.IdOf(line)}}}""" + "\r\n"));
        await using var qmp = await QmpClient.ConnectAsync(server.Path, Timeout);
        var ex = await Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("foo"));
        Assert.Equal(("foo", "CommandNotFound", "The command foo has not been found"), (ex.Command, ex.ErrorClass, ex.Description));
        await Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("foo2")); // the connection is still usable
    }

    [Fact]
    public async Task Events_arrive_on_the_channel_between_replies()
    {
        await using var server = new FakeQmpServer(line => FakeQmpServer.CommandOf(line) == "cont"
            ? [.. Encoding.UTF8.GetBytes("""{"timestamp": {"seconds": 1764232200, "microseconds": 5}, "event": "RESUME"}""" + "\r\n"), .. Ok(line)]
            : Ok(line));
        await using var qmp = await QmpClient.ConnectAsync(server.Path, Timeout);
        await qmp.ExecuteAsync("cont");
        var e = await qmp.WaitForEventAsync("RESUME", Timeout);
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1764232200).AddTicks(50), e.Timestamp);
        Assert.Null(e.Data);
    }

    [Fact]
    public async Task A_command_times_out_and_its_late_reply_is_dropped()
    {
        string? held = null;
        await using var server = new FakeQmpServer(line =>
        {
            switch (FakeQmpServer.CommandOf(line))
            {
                case "slow":
                    held = line;
                    return null;
                case "fast":
                    return [.. FakeQmpServer.Return(held!, "1"), .. FakeQmpServer.Return(line, "2")];
                default:
                    return Ok(line);
            }
        });
        await using var qmp = await QmpClient.ConnectAsync(server.Path, Timeout);
        await Assert.ThrowsAsync<TimeoutException>(() => qmp.ExecuteAsync("slow", null, TimeSpan.FromMilliseconds(200)));
        Assert.Equal(2, (await qmp.ExecuteAsync("fast"))!.GetValue<int>());
    }

    [Fact]
    public async Task Replies_out_of_order_reach_their_commands()
    {
        var first = new TaskCompletionSource<string>();
        await using var server = new FakeQmpServer(line =>
        {
            switch (FakeQmpServer.CommandOf(line))
            {
                case "a":
                    first.SetResult(line);
                    return null;
                case "b":
                    return [.. FakeQmpServer.Return(line, "\"b\""), .. FakeQmpServer.Return(first.Task.Result, "\"a\"")];
                default:
                    return Ok(line);
            }
        });
        await using var qmp = await QmpClient.ConnectAsync(server.Path, Timeout);
        var a = qmp.ExecuteAsync("a");
        await first.Task.WaitAsync(Timeout);
        var b = qmp.ExecuteAsync("b");
        Assert.Equal("b", (await b)!.GetValue<string>());
        Assert.Equal("a", (await a)!.GetValue<string>());
    }

    /// <summary>case, the reply to the second command (REPLACE-ID is its id), the protocol error id.</summary>
    public static TheoryData<string, string, string> Breaks => new()
    {
        { "reply to an id never sent", """{"return": {}, "id": "r99"}""", "qmp.reply.id" },
        { "reply without id", """{"return": {}}""", "qmp.reply.id" },
        { "id not a string", """{"return": {}, "id": 2}""", "qmp.reply.id" },
        { "return and error", """{"return": {}, "error": {"class": "x", "desc": "y"}, "id": ID}""", "qmp.message" },
        { "neither", """{"id": ID}""", "qmp.message" },
        { "error without desc", """{"error": {"class": "GenericError"}, "id": ID}""", "qmp.message" },
        { "event without timestamp", """{"event": "STOP"}""", "qmp.message" },
        { "event data not an object", """{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 0}, "data": 1}""", "qmp.message" },
        { "microseconds out of range", """{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 1000000}}""", "qmp.message" },
        { "array", """[{"return": {}, "id": ID}]""", "qmp.message" },
        { "duplicate member", """{"return": {}, "return": 1, "id": ID}""", "qmp.json" },
        { "trailing comma", """{"return": {}, "id": ID,}""", "qmp.json" },
        { "comment", """{"return": {} /* hi */, "id": ID}""", "qmp.json" },
        { "two objects on a line", """{"return": {}, "id": ID}{"return": {}, "id": ID}""", "qmp.json" },
        { "not JSON", "OK", "qmp.json" },
        { "too deep", new string('[', 100) + new string(']', 100), "qmp.json" },
    };

    [Theory]
    [MemberData(nameof(Breaks))]
    public async Task A_protocol_break_fails_the_command_and_closes_the_connection(string name, string reply, string id)
    {
        await using var server = new FakeQmpServer(line => FakeQmpServer.CommandOf(line) == "qmp_capabilities" ? Ok(line)
            : Encoding.UTF8.GetBytes(reply.Replace("ID", FakeQmpServer.IdOf(line), StringComparison.Ordinal) + "\r\n"));
        await using var qmp = await QmpClient.ConnectAsync(server.Path, Timeout);
        var ex = await Assert.ThrowsAsync<QmpProtocolException>(() => qmp.ExecuteAsync("query-status"));
        Assert.True(ex.Id == id || (ex.Id == "qmp.closed" && (ex.InnerException as QmpProtocolException)?.Id == id), $"{name}: {ex.Id} {ex.Message}");
        await Assert.ThrowsAsync<QmpProtocolException>(() => qmp.ExecuteAsync("query-status"));
    }

    [Fact]
    public async Task A_line_past_the_limit_is_refused()
    {
        var huge = "{\"return\": \"" + new string('a', QmpClient.MaxLineBytes + 10) + "\", \"id\": ID}";
        await using var server = new FakeQmpServer(line => FakeQmpServer.CommandOf(line) == "qmp_capabilities" ? Ok(line)
            : Encoding.UTF8.GetBytes(huge.Replace("ID", FakeQmpServer.IdOf(line), StringComparison.Ordinal) + "\r\n"));
        await using var qmp = await QmpClient.ConnectAsync(server.Path, Timeout);
        var ex = await Assert.ThrowsAsync<QmpProtocolException>(() => qmp.ExecuteAsync("query-status"));
        Assert.Equal("qmp.line-too-long", (ex.InnerException as QmpProtocolException)?.Id ?? ex.Id);
    }

    [Theory]
    [InlineData("""{"QMP": {"version": {"qemu": {"major": 7, "minor": 2}}, "capabilities": []}}""", "qmp.greeting")]
    [InlineData("""{"QMP": {"version": {"qemu": {"major": -1, "minor": 2, "micro": 0}}, "capabilities": []}}""", "qmp.greeting")]
    [InlineData("""{"return": {}}""", "qmp.greeting")]
    [InlineData("""{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}}}""", "qmp.greeting")]
    [InlineData("QMP ready", "qmp.json")]
    public async Task A_bad_greeting_is_refused(string greeting, string id)
    {
        await using var server = new FakeQmpServer(Ok, Encoding.UTF8.GetBytes(greeting + "\r\n"));
        var ex = await Assert.ThrowsAsync<QmpProtocolException>(() => QmpClient.ConnectAsync(server.Path, Timeout));
        Assert.Equal(id, ex.Id);
    }

    [Fact]
    public async Task Mutated_replies_give_a_value_or_a_typed_error_never_anything_else()
    {
        string[] valid =
        [
            """{"return": {"status": "running", "singlestep": false, "running": true}, "id": "r2"}""",
            """{"return": [{"device": "disk0", "inserted": {"ro": false, "file": "/v/d.qcow2", "encrypted": true}}], "id": "r2"}""",
            """{"error": {"class": "GenericError", "desc": "Device 'x' not found"}, "id": "r2"}""",
            """{"timestamp": {"seconds": 1764232200, "microseconds": 123}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}""",
            FakeQmpServer.Greeting,
        ];
        var rng = new Random(20261127);
        var outcomes = new Dictionary<string, int>();
        for (var i = 0; i < 600; i++)
        {
            var target = rng.Next(valid.Length);
            var bytes = Mutate(Encoding.UTF8.GetBytes(valid[target]), rng);
            var greeting = target == valid.Length - 1 ? bytes : Encoding.UTF8.GetBytes(FakeQmpServer.Greeting);
            var reply = target == valid.Length - 1 ? Encoding.UTF8.GetBytes(valid[0]) : bytes;
            var input = new MemoryStream([.. greeting, .. "\r\n"u8, .. """{"return": {}, "id": "r1"}"""u8, .. "\r\n"u8, .. reply, .. "\r\n"u8]);
            string outcome;
            try
            {
                await using var qmp = await QmpClient.OpenAsync(input, new MemoryStream(), Timeout, null);
                await qmp.ExecuteAsync("query-status", null, Timeout);
                outcome = "value";
            }
            catch (Exception ex) when (ex is QmpException or QmpProtocolException)
            {
                outcome = ex.GetType().Name;
            }
            outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
        }
        Assert.True(outcomes.GetValueOrDefault(nameof(QmpProtocolException)) > 100, string.Join(", ", outcomes));
    }

    [Fact]
    public async Task A_reply_whose_text_is_not_valid_utf8_is_a_protocol_error_not_a_crash()
    {
        // Found by the mutation test above: a reply's "return" holding a byte that is not UTF-8
        // (GetRawText cannot transcode it) crashed the reader, and DisposeAsync rethrew that.
        static byte[] A(string t) => Encoding.ASCII.GetBytes(t);
        byte[] reply = [.. A("{\"return\": {\"a\": \"x"), 0xc3, .. A("\"}, \"id\": \"r1\"}")];
        var input = new MemoryStream([.. Encoding.UTF8.GetBytes(FakeQmpServer.Greeting), .. "\r\n"u8, .. reply, .. "\r\n"u8]);
        var ex = await Assert.ThrowsAsync<QmpProtocolException>(() => QmpClient.OpenAsync(input, new MemoryStream(), Timeout, null));
        // The reader may fail before or after the command is registered: qmp.message itself, or qmp.closed caused by it.
        // (The reply's content is checked before its id, so the reader's failure is qmp.message either way; CI once saw qmp.reply.id.)
        Assert.Equal("qmp.message", ex.Id == "qmp.message" ? ex.Id : (ex.InnerException as QmpProtocolException)?.Id);
    }

    [Fact]
    public async Task A_command_pending_when_the_client_is_disposed_ends_as_qmp_closed()
    {
        // The agent's watcher disposes a VM's QMP client when QEMU exits, possibly while 'quit' waits for its reply.
        await using var server = new FakeQmpServer(line => FakeQmpServer.CommandOf(line) == "qmp_capabilities" ? Ok(line) : null);
        var client = await QmpClient.ConnectAsync(server.Path, Timeout);
        var quit = client.ExecuteAsync("quit", null, TimeSpan.FromSeconds(30));
        await Task.Delay(200);
        await client.DisposeAsync();
        var ex = await Assert.ThrowsAsync<QmpProtocolException>(() => quit);
        Assert.Equal("qmp.closed", ex.Id);
    }

    [Fact]
    public async Task A_secret_travels_only_inside_the_qmp_message_and_a_refusal_never_names_it()
    {
        var key = RandomNumberGenerator.GetBytes(32);
        await using var server = new FakeQmpServer(Ok);
        await using var client = await QmpClient.ConnectAsync(server.Path, Timeout);
        var qmp = new GuardedQmp(client, new QmpAllowlist());
        await qmp.AddSecretAsync("sec-disk0", key);
        var sent = JsonNode.Parse(server.Received[^1])!;
        Assert.Equal("object-add", sent["execute"]!.GetValue<string>());
        var args = sent["arguments"]!.AsObject();
        Assert.Equal(["qom-type", "id", "data", "format"], args.Select(p => p.Key));
        Assert.Equal(("secret", "sec-disk0", Convert.ToBase64String(key), "base64"),
            (args["qom-type"]!.GetValue<string>(), args["id"]!.GetValue<string>(), args["data"]!.GetValue<string>(), args["format"]!.GetValue<string>()));

        var refused = await Assert.ThrowsAsync<QmpRefusedException>(() => qmp.AddSecretAsync("../bad", key));
        Assert.Equal("qmp.refused.arguments", refused.RefusalId);
        Assert.DoesNotContain(Convert.ToBase64String(key), refused.ToString(), StringComparison.Ordinal);
        Assert.Equal(2, server.Received.Count);
    }

    private static readonly byte[] Specials = [.. "{}[]\",:\\0a\n"u8, 0xff, 0xc3, 0x00];

    private static byte[] Mutate(byte[] b, Random rng)
    {
        var list = b.ToList();
        for (var n = rng.Next(1, 4); n > 0 && list.Count > 0; n--)
        {
            var at = rng.Next(list.Count);
            switch (rng.Next(6))
            {
                case 0: list[at] ^= (byte)(1 << rng.Next(8)); break;
                case 1: list.RemoveAt(at); break;
                case 2: list.Insert(at, Specials[rng.Next(Specials.Length)]); break;
                case 3: list.RemoveRange(at, list.Count - at); break;
                case 4: list.InsertRange(at, list.GetRange(at, Math.Min(8, list.Count - at))); break;
                default: list[at] = (byte)rng.Next(256); break;
            }
        }
        return [.. list];
    }
}

using System.Net.Sockets;
using System.Text;
using Rempart.Host.Agent;
using Rempart.Host.Tests.Infrastructure;

namespace Rempart.Host.Tests.Agent;

/// <summary>
/// The console path without a VM: the client's upgrade handshake against a fake agent (good,
/// refused and garbled answers, every truncation and byte flip of a real refusal) and the
/// agent's relay against a fake QEMU serial socket (bytes both ways, who ended it, the record).
/// </summary>
public sealed class ConsoleTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-console-").FullName;
    private readonly SocketPairs _pairs;

    public ConsoleTests() => _pairs = new SocketPairs(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private const string Busy = "HTTP/1.1 409 Conflict\r\nContent-Type: application/problem+json\r\nContent-Length: 98\r\n\r\n"
        + "{\"type\":\"urn:rempart:problem:vm.console.busy\",\"title\":\"vm.console.busy\",\"status\":409,\"detail\":\"x\"}";

    private const string BusyChunked = "HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n"
        + "1f\r\n{\"title\":\"vm.console.busy\",\"det\r\n1f;ext=1\r\nail\":\"another session is open\"}\r\n0\r\n\r\n";

    [Fact]
    public async Task A_101_answer_gives_the_stream_with_the_bytes_that_came_with_the_headers()
    {
        var (client, server) = await _pairs.StreamsAsync();
        var agent = Task.Run(async () =>
        {
            var request = await ReadHeadAsync(server);
            await server.WriteAsync(Encoding.ASCII.GetBytes("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: rempart-console\r\n\r\nBdsDxe: "));
            await server.WriteAsync("loading\r\n"u8.ToArray());
            var typed = new byte[4];
            await server.ReadExactlyAsync(typed);
            return (request, Encoding.ASCII.GetString(typed));
        });
        await using var console = await ConsoleClient.HandshakeAsync(client, "web 1", "alice");
        var seen = new StringBuilder();
        var buffer = new byte[64];
        while (!seen.ToString().EndsWith("loading\r\n", StringComparison.Ordinal))
        {
            int n = await console.ReadAsync(buffer);
            Assert.True(n > 0);
            seen.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }
        Assert.Equal("BdsDxe: loading\r\n", seen.ToString());
        await console.WriteAsync("ping"u8.ToArray());
        var (head, typedAtAgent) = await agent;
        Assert.StartsWith("POST /v1/vms/web%201/console?user=alice HTTP/1.1\r\n", head, StringComparison.Ordinal);
        Assert.Contains("\r\nConnection: Upgrade\r\n", head, StringComparison.Ordinal);
        Assert.Contains("\r\nUpgrade: rempart-console\r\n", head, StringComparison.Ordinal);
        Assert.Equal("ping", typedAtAgent);
    }

    public static TheoryData<string, string, int> Answers => new()
    {
        { Busy, "vm.console.busy", 409 },
        { "HTTP/1.1 403 Forbidden\r\nContent-Length: 61\r\n\r\n{\"title\":\"vm.console.shielded\",\"detail\":\"web1 is shielded\"}  ", "vm.console.shielded", 403 },
        { BusyChunked, "vm.console.busy", 409 },
        { "HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "console.protocol", 0 },
        { "HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort", "console.protocol", 0 },
        { "HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", "console.protocol", 0 },
        { "HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFF\r\n", "console.protocol", 0 },
        { "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", "console.protocol", 500 },
        { "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 9\r\n\r\nnot json!", "console.protocol", 502 },
        { "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "console.protocol", 0 },
        { "HTTP/1.1 101 Switching Protocols\r\n\r\n", "console.protocol", 0 },
        { "SSH-2.0-OpenSSH_9.2\r\n\r\n", "console.protocol", 0 },
        { "HTTP/1.1 99999 Odd\r\n\r\n", "console.protocol", 0 },
        { "HTTP/1.1 409 Conflict\r\nno colon here\r\n\r\n", "console.protocol", 0 },
        { "HTTP/1.1 409 Conflict\r\nContent-Length: 1000000\r\n\r\n", "console.protocol", 0 },
        { "HTTP/1.1 409 Conflict\r\nContent-Length: 50\r\n\r\n{\"title\":", "console.protocol", 0 },
        { "HTTP/1.1 409 Con", "console.protocol", 0 },
        { "", "console.protocol", 0 },
    };

    [Theory]
    [MemberData(nameof(Answers))]
    public async Task Refused_or_garbled_answers_are_one_exception_with_the_agents_id(string answer, string id, int status)
    {
        var e = await Assert.ThrowsAsync<ConsoleRefusedException>(() => AnswerAsync(Encoding.ASCII.GetBytes(answer)));
        Assert.Equal((id, status), (e.Id, e.Status));
    }

    [Fact]
    public async Task Headers_without_end_are_refused_after_16_KiB_not_read_forever()
    {
        var answer = Encoding.ASCII.GetBytes("HTTP/1.1 409 Conflict\r\n" + string.Concat(Enumerable.Repeat("X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 1000)));
        var e = await Assert.ThrowsAsync<ConsoleRefusedException>(() => AnswerAsync(answer, close: false));
        Assert.Contains("16384 bytes of headers", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Every_truncation_and_byte_flip_of_a_refusal_is_a_refusal_never_another_exception_or_a_console()
    {
        var rng = new Random(20261127);
        var cases = new List<byte[]>();
        foreach (var good in new[] { Busy, BusyChunked }.Select(Encoding.ASCII.GetBytes))
        {
            cases.AddRange(Enumerable.Range(0, good.Length).Select(n => good[..n]));
            for (int i = 0; i < 300; i++)
            {
                var bad = (byte[])good.Clone();
                bad[rng.Next(bad.Length)] ^= (byte)(1 << rng.Next(8));
                cases.Add(bad);
            }
        }
        foreach (var answer in cases)
        {
            var e = await Assert.ThrowsAsync<ConsoleRefusedException>(() => AnswerAsync(answer));
            Assert.DoesNotContain('\n', e.Message);
        }
    }

    [Fact]
    public async Task The_relay_carries_both_ways_and_records_a_client_end()
    {
        var (serialAgent, serialQemu) = await _pairs.RawAsync();
        var (client, agentSide) = await _pairs.StreamsAsync();
        var closed = new List<ConsoleSummary>();
        bool released = false;
        await using (var session = new ConsoleSession("s1", serialAgent, closed.Add, () => released = true))
        {
            var relay = session.RelayAsync(agentSide, CancellationToken.None);
            await serialQemu.SendAsync("login: "u8.ToArray());
            var got = new byte[7];
            await client.ReadExactlyAsync(got);
            Assert.Equal("login: ", Encoding.ASCII.GetString(got));
            await client.WriteAsync("root\n"u8.ToArray());
            var typed = new byte[5];
            await new NetworkStream(serialQemu).ReadExactlyAsync(typed);
            Assert.Equal("root\n", Encoding.ASCII.GetString(typed));
            client.Dispose();
            var summary = await relay.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(new ConsoleSummary("client", 5, 7, summary.DurationMs), summary);
            Assert.Equal([summary], closed);
            await Assert.ThrowsAsync<InvalidOperationException>(() => session.RelayAsync(new MemoryStream(), CancellationToken.None));
        }
        Assert.True(released);
        serialQemu.Dispose();
    }

    [Fact]
    public async Task The_relay_ends_when_qemu_closes_the_serial_socket_or_the_agent_stops()
    {
        var (serialAgent, serialQemu) = await _pairs.RawAsync();
        var (client, agentSide) = await _pairs.StreamsAsync();
        var closed = new List<ConsoleSummary>();
        await using (var session = new ConsoleSession("s2", serialAgent, closed.Add, () => { }))
        {
            var relay = session.RelayAsync(agentSide, CancellationToken.None);
            await serialQemu.SendAsync("bye"u8.ToArray());
            serialQemu.Dispose(); // QEMU exits
            Assert.Equal("vm", (await relay.WaitAsync(TimeSpan.FromSeconds(10))).EndedBy);
            agentSide.Dispose(); // as the endpoint's end closes the upgraded connection
            var rest = new MemoryStream();
            await client.CopyToAsync(rest).WaitAsync(TimeSpan.FromSeconds(10)); // the client sees the end too
            Assert.Equal("bye", Encoding.ASCII.GetString(rest.ToArray()));
        }

        var (serialAgent2, serialQemu2) = await _pairs.RawAsync();
        var (client2, agentSide2) = await _pairs.StreamsAsync();
        using var stopping = new CancellationTokenSource();
        await using (var session = new ConsoleSession("s3", serialAgent2, closed.Add, () => { }))
        {
            var relay = session.RelayAsync(agentSide2, stopping.Token);
            await stopping.CancelAsync();
            Assert.Equal("agent", (await relay.WaitAsync(TimeSpan.FromSeconds(10))).EndedBy);
        }
        Assert.Equal(["vm", "agent"], closed.Select(c => c.EndedBy));
        client.Dispose();
        client2.Dispose();
        serialQemu2.Dispose();
    }

    [Fact]
    public async Task A_session_disposed_without_a_relay_is_recorded_as_ended_by_an_error_once()
    {
        var (serialAgent, serialQemu) = await _pairs.RawAsync();
        var closed = new List<ConsoleSummary>();
        int released = 0;
        var session = new ConsoleSession("s4", serialAgent, closed.Add, () => released++);
        await session.DisposeAsync();
        Assert.Equal([new ConsoleSummary("error", 0, 0, 0)], closed);
        Assert.Equal(1, released);
        await Assert.ThrowsAsync<InvalidOperationException>(() => session.RelayAsync(new MemoryStream(), CancellationToken.None));
        serialQemu.Dispose();
    }

    /// <summary>A fake agent that reads the request and writes <paramref name="answer"/> (then closes, unless told not to).</summary>
    private async Task AnswerAsync(byte[] answer, bool close = true)
    {
        var (client, server) = await _pairs.StreamsAsync();
        var agent = Task.Run(async () =>
        {
            await ReadHeadAsync(server);
            await server.WriteAsync(answer);
            if (close)
            {
                server.Dispose();
            }
        });
        try
        {
            await using var console = await ConsoleClient.HandshakeAsync(client, "web1", "alice").WaitAsync(TimeSpan.FromSeconds(10));
        }
        finally
        {
            await agent;
            server.Dispose();
        }
    }

    private static async Task<string> ReadHeadAsync(Stream s)
    {
        var head = new StringBuilder();
        var one = new byte[1];
        while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal) && await s.ReadAsync(one) == 1)
        {
            head.Append((char)one[0]);
        }
        return head.ToString();
    }
}

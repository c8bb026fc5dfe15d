using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;

namespace Rempart.Host.Agent;

/// <summary>The agent refused a console, or did not answer as an agent does; <see cref="Id"/> is the stable id.</summary>
public sealed class ConsoleRefusedException(string id, string message, int status) : Exception(message)
{
    /// <summary>The agent's problem title (e.g. <c>vm.console.shielded</c>, <c>vm.console.busy</c>), or <c>console.protocol</c>.</summary>
    public string Id { get; } = id;

    /// <summary>The HTTP status (0 when the answer was not HTTP).</summary>
    public int Status { get; } = status;
}

/// <summary>
/// Opens a VM's console through the agent: <c>POST /v1/vms/NAME/console</c> with
/// <c>Connection: Upgrade</c>, <c>Upgrade: rempart-console</c>; on <c>101 Switching Protocols</c>
/// the connection becomes the console's byte stream, relayed and recorded by the agent. Any
/// other answer is the agent's problem document, turned into <see cref="ConsoleRefusedException"/>.
/// </summary>
public static class ConsoleClient
{
    public const string Protocol = "rempart-console";
    private const int MaxHead = 16 * 1024;
    private const int MaxBody = 64 * 1024;

    /// <summary>The console's stream; the caller disposes it (that ends the session).</summary>
    public static async Task<Stream> OpenAsync(string agentSocket, string vm, string user, CancellationToken ct = default)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await s.ConnectAsync(new UnixDomainSocketEndPoint(agentSocket), ct).ConfigureAwait(false);
            var net = new NetworkStream(s, ownsSocket: true);
            return await HandshakeAsync(net, vm, user, ct).ConfigureAwait(false);
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    /// <summary>Sends the upgrade request on <paramref name="connection"/> and reads the answer (exposed for tests with a fake agent).</summary>
    public static async Task<Stream> HandshakeAsync(Stream connection, string vm, string user, CancellationToken ct = default)
    {
        string request = $"POST /v1/vms/{Uri.EscapeDataString(vm)}/console?user={Uri.EscapeDataString(user)} HTTP/1.1\r\n"
            + $"Host: agent\r\nConnection: Upgrade\r\nUpgrade: {Protocol}\r\nContent-Length: 0\r\n\r\n";
        await connection.WriteAsync(Encoding.ASCII.GetBytes(request), ct).ConfigureAwait(false);
        await connection.FlushAsync(ct).ConfigureAwait(false);

        var head = new MemoryStream();
        var buffer = new byte[4096];
        int end;
        while ((end = HeadEnd(head.GetBuffer().AsSpan(0, (int)head.Length))) < 0)
        {
            if (head.Length > MaxHead)
            {
                throw Garbled($"the agent's answer has more than {MaxHead} bytes of headers");
            }
            int n = await connection.ReadAsync(buffer, ct).ConfigureAwait(false);
            if (n == 0)
            {
                throw Garbled("the agent closed the connection before answering");
            }
            head.Write(buffer, 0, n);
        }
        var bytes = head.GetBuffer().AsSpan(0, (int)head.Length);
        var lines = Encoding.Latin1.GetString(bytes[..end]).Split("\r\n");
        var rest = bytes[(end + 4)..].ToArray();
        var status = lines[0].Split(' ', 3);
        if (status.Length < 2 || !status[0].StartsWith("HTTP/1.", StringComparison.Ordinal)
            || !int.TryParse(status[1], NumberStyles.None, CultureInfo.InvariantCulture, out int code) || code is < 100 or > 599)
        {
            throw Garbled($"the agent's answer is not HTTP/1.x: '{Printable(lines[0])}'");
        }
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var line in lines.Skip(1))
        {
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                throw Garbled($"a header line of the agent's answer has no name: '{Printable(line)}'");
            }
            headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
        }
        if (code == 101)
        {
            if (!string.Equals(headers.GetValueOrDefault("Upgrade"), Protocol, StringComparison.OrdinalIgnoreCase))
            {
                throw Garbled($"the agent switched to '{Printable(headers.GetValueOrDefault("Upgrade") ?? "")}', not {Protocol}");
            }
            return rest.Length == 0 ? connection : new PrefixedStream(rest, connection);
        }
        await using (connection)
        {
            var body = await ReadBodyAsync(connection, headers, rest, ct).ConfigureAwait(false);
            string id = "console.protocol", detail = $"the agent answered {code} without a problem document";
            try
            {
                if (JsonNode.Parse(body) is JsonObject problem)
                {
                    id = problem["title"]?.GetValue<string>() ?? id;
                    detail = problem["detail"]?.GetValue<string>() ?? detail;
                }
            }
            catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or FormatException)
            {
                // keep the generic message: the status says enough
            }
            throw new ConsoleRefusedException(Printable(id), Printable(detail), code);
        }
    }

    private static async Task<byte[]> ReadBodyAsync(Stream connection, Dictionary<string, string> headers, byte[] rest, CancellationToken ct)
    {
        if (string.Equals(headers.GetValueOrDefault("Transfer-Encoding"), "chunked", StringComparison.OrdinalIgnoreCase))
        {
            return await ReadChunkedAsync(new PrefixedStream(rest, connection), ct).ConfigureAwait(false);
        }
        if (!headers.TryGetValue("Content-Length", out var cl) || !int.TryParse(cl, NumberStyles.None, CultureInfo.InvariantCulture, out int length))
        {
            return rest;
        }
        if (length > MaxBody)
        {
            throw Garbled($"the agent's error body is {length} bytes (more than {MaxBody})");
        }
        var body = new byte[length];
        int have = Math.Min(rest.Length, length);
        rest.AsSpan(0, have).CopyTo(body);
        while (have < length)
        {
            int n = await connection.ReadAsync(body.AsMemory(have), ct).ConfigureAwait(false);
            if (n == 0)
            {
                throw Garbled($"the agent closed the connection after {have} of {length} bytes of its answer");
            }
            have += n;
        }
        return body;
    }

    /// <summary>HTTP/1.1 chunked coding (RFC 9112 §7.1): <c>size[;ext] CRLF data CRLF</c>… <c>0 CRLF</c>, trailers ignored; at most <see cref="MaxBody"/> bytes.</summary>
    private static async Task<byte[]> ReadChunkedAsync(Stream s, CancellationToken ct)
    {
        var body = new MemoryStream();
        while (true)
        {
            var line = await ReadLineAsync(s, ct).ConfigureAwait(false);
            var size = line.Split(';', 2)[0].Trim();
            if (!int.TryParse(size, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int n) || n < 0 || size.Length > 8)
            {
                throw Garbled($"a chunk of the agent's answer has no valid size: '{Printable(line)}'");
            }
            if (n == 0)
            {
                return body.ToArray();
            }
            if (body.Length + n > MaxBody)
            {
                throw Garbled($"the agent's error body is more than {MaxBody} bytes");
            }
            var chunk = new byte[n];
            try
            {
                await s.ReadExactlyAsync(chunk, ct).ConfigureAwait(false);
            }
            catch (EndOfStreamException)
            {
                throw Garbled("the agent closed the connection inside a chunk of its answer");
            }
            body.Write(chunk);
            if ((await ReadLineAsync(s, ct).ConfigureAwait(false)).Length != 0)
            {
                throw Garbled("a chunk of the agent's answer is longer than its size");
            }
        }
    }

    private static async Task<string> ReadLineAsync(Stream s, CancellationToken ct)
    {
        var line = new StringBuilder();
        var one = new byte[1];
        while (true)
        {
            if (await s.ReadAsync(one, ct).ConfigureAwait(false) == 0)
            {
                throw Garbled("the agent closed the connection inside its answer's body");
            }
            if (one[0] == '\n' && line.Length > 0 && line[^1] == '\r')
            {
                return line.ToString(0, line.Length - 1);
            }
            if (line.Length > 1024)
            {
                throw Garbled("a chunk line of the agent's answer is longer than 1024 bytes");
            }
            line.Append((char)one[0]);
        }
    }

    private static int HeadEnd(ReadOnlySpan<byte> b) => b.IndexOf("\r\n\r\n"u8);

    private static ConsoleRefusedException Garbled(string message) => new("console.protocol", message, 0);

    private static string Printable(string s) => Migration.SecureChannel.Printable(s, 200);

    /// <summary>Bytes that arrived with the answer's headers, then the connection.</summary>
    private sealed class PrefixedStream(byte[] prefix, Stream inner) : Stream
    {
        private int _at;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            if (_at < prefix.Length)
            {
                int n = Math.Min(buffer.Length, prefix.Length - _at);
                prefix.AsSpan(_at, n).CopyTo(buffer);
                _at += n;
                return n;
            }
            return inner.Read(buffer);
        }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) =>
            _at < prefix.Length ? ValueTask.FromResult(Read(buffer.Span)) : inner.ReadAsync(buffer, ct);

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) => ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();

        public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default) => inner.WriteAsync(buffer, ct);

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken ct) => inner.WriteAsync(buffer, offset, count, ct);

        public override void Flush() => inner.Flush();

        public override Task FlushAsync(CancellationToken ct) => inner.FlushAsync(ct);

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}

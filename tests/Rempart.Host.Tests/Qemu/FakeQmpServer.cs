using System.Net.Sockets;
using System.Text;

namespace Rempart.Host.Tests.Qemu;

/// <summary>
/// A scripted QMP peer on a unix socket: sends <see cref="Greeting"/>, then for every line the
/// client sends, calls the handler with the line and writes back whatever bytes it returns.
/// </summary>
public sealed class FakeQmpServer : IAsyncDisposable
{
    public const string Greeting = """{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}""";

    private readonly Socket _listener;
    private readonly string _dir;
    private readonly Task _serve;
    private readonly CancellationTokenSource _stop = new();

    public FakeQmpServer(Func<string, byte[]?> handler, byte[]? greeting = null)
    {
        _dir = Directory.CreateTempSubdirectory("rempart-qmp-test.").FullName;
        Path = System.IO.Path.Combine(_dir, "qmp.sock");
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(Path));
        _listener.Listen(1);
        _serve = Task.Run(() => ServeAsync(handler, greeting ?? Encoding.UTF8.GetBytes(Greeting + "\r\n")));
    }

    public string Path { get; }

    /// <summary>Every line the client sent.</summary>
    public List<string> Received { get; } = [];

    /// <summary>A reply to <paramref name="line"/>'s id: <c>{"return": RET, "id": ID}</c>.</summary>
    public static byte[] Return(string line, string ret = "{}") =>
        Encoding.UTF8.GetBytes($$"""{"return": {{ret}}, "id": {{IdOf(line)}}}""" + "\r\n");

    public static string IdOf(string line) => System.Text.Json.Nodes.JsonNode.Parse(line)!["id"]!.ToJsonString();

    public static string CommandOf(string line) => System.Text.Json.Nodes.JsonNode.Parse(line)!["execute"]!.GetValue<string>();

    private async Task ServeAsync(Func<string, byte[]?> handler, byte[] greeting)
    {
        try
        {
            using var s = await _listener.AcceptAsync(_stop.Token);
            await s.SendAsync(greeting, SocketFlags.None, _stop.Token);
            var pending = new List<byte>();
            var buffer = new byte[4096];
            while (true)
            {
                var n = await s.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                if (n == 0)
                {
                    return;
                }
                pending.AddRange(buffer.AsSpan(0, n).ToArray());
                int nl;
                while ((nl = pending.IndexOf((byte)'\n')) >= 0)
                {
                    var line = Encoding.UTF8.GetString(pending.GetRange(0, nl).ToArray());
                    pending.RemoveRange(0, nl + 1);
                    lock (Received)
                    {
                        Received.Add(line);
                    }
                    var reply = handler(line);
                    if (reply is null)
                    {
                        continue;
                    }
                    if (reply.Length == 0)
                    {
                        s.Shutdown(SocketShutdown.Both);
                        return;
                    }
                    await s.SendAsync(reply, SocketFlags.None, _stop.Token);
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        await _serve;
        _stop.Dispose();
        Directory.Delete(_dir, recursive: true);
    }
}

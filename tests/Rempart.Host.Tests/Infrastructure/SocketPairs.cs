using System.Net.Sockets;

namespace Rempart.Host.Tests.Infrastructure;

/// <summary>Connected pairs of unix stream sockets in a test's folder: a fake peer on one end, the code under test on the other.</summary>
internal sealed class SocketPairs(string dir)
{
    private int _n;

    public async Task<(Socket A, Socket B)> RawAsync()
    {
        var path = Path.Combine(dir, $"pair{Interlocked.Increment(ref _n)}.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        var a = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await a.ConnectAsync(new UnixDomainSocketEndPoint(path));
        var b = await listener.AcceptAsync();
        return (a, b);
    }

    public async Task<(NetworkStream A, NetworkStream B)> StreamsAsync()
    {
        var (a, b) = await RawAsync();
        return (new NetworkStream(a, ownsSocket: true), new NetworkStream(b, ownsSocket: true));
    }
}

using System.Net.Sockets;

namespace Rempart.Host.Agent;

/// <summary>The host agent's local API lives on a unix socket; this makes an HTTP client for it.</summary>
public static class AgentSocket
{
    public const string DefaultPath = "/run/rempart/agent.sock";

    /// <summary>An HTTP client whose every connection is the agent's unix socket at <paramref name="path"/>.</summary>
    public static HttpClient Client(string path) => new(new SocketsHttpHandler
    {
        ConnectCallback = async (_, ct) =>
        {
            var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await s.ConnectAsync(new UnixDomainSocketEndPoint(path), ct);
                return new NetworkStream(s, ownsSocket: true);
            }
            catch
            {
                s.Dispose();
                throw;
            }
        },
    })
    { BaseAddress = new Uri("http://agent/"), Timeout = TimeSpan.FromSeconds(60) };
}

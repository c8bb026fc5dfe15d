using System.Buffers.Binary;
using System.Net.Sockets;

namespace Rempart.Tpm.Transport;

/// <summary>
/// swtpm's data channel (swtpm socket --server): raw TPM 2.0 command and response frames
/// over TCP or a unix stream socket. The response length is taken from its header
/// (Part 3, §5.1: tag, responseSize, responseCode) and bounded.
/// </summary>
public sealed class SwtpmTransport : ITpmTransport
{
    private const int MaxResponse = 64 * 1024;
    private readonly Socket _socket;
    private readonly NetworkStream _stream;

    private SwtpmTransport(Socket socket, string address)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        Address = address;
    }

    public string Address { get; }

    public static SwtpmTransport ConnectTcp(string host, int port, TimeSpan? timeout = null)
    {
        var s = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        return Connect(s, () => s.Connect(host, port), $"swtpm:tcp:{host}:{port}", timeout);
    }

    public static SwtpmTransport ConnectUnix(string path, TimeSpan? timeout = null)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        return Connect(s, () => s.Connect(new UnixDomainSocketEndPoint(path)), $"swtpm:unix:{path}", timeout);
    }

    private static SwtpmTransport Connect(Socket s, Action connect, string address, TimeSpan? timeout)
    {
        int ms = (int)(timeout ?? TimeSpan.FromSeconds(60)).TotalMilliseconds;
        s.ReceiveTimeout = ms;
        s.SendTimeout = ms;
        try
        {
            connect();
        }
        catch (SocketException e)
        {
            s.Dispose();
            throw new TpmTransportException($"cannot connect to {address}: {e.Message} (is swtpm running?)", e);
        }
        return new SwtpmTransport(s, address);
    }

    public byte[] Transmit(ReadOnlySpan<byte> command)
    {
        try
        {
            _stream.Write(command);
            var header = new byte[10];
            _stream.ReadExactly(header);
            uint size = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(2));
            if (size < 10 || size > MaxResponse)
            {
                throw new TpmTransportException($"{Address}: response size {size} out of range");
            }
            var response = new byte[size];
            header.CopyTo(response, 0);
            _stream.ReadExactly(response.AsSpan(10));
            return response;
        }
        catch (Exception e) when (e is IOException or SocketException && e is not TpmTransportException)
        {
            throw new TpmTransportException($"{Address}: {e.Message}", e);
        }
    }

    public void Dispose()
    {
        _stream.Dispose();
        _socket.Dispose();
    }
}

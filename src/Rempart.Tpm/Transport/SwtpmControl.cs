using System.Buffers.Binary;
using System.Net.Sockets;

namespace Rempart.Tpm.Transport;

/// <summary>
/// swtpm's control channel (swtpm --ctrl; the protocol of swtpm's tpm_ioctl.h, "CMD_*" over
/// a socket: a big-endian UINT32 command code, its input, then a UINT32 result). Used to
/// power the TPM on (CMD_INIT) and to stop it cleanly (CMD_SHUTDOWN).
/// </summary>
public sealed class SwtpmControl : IDisposable
{
    private const uint CmdGetCapability = 1;
    private const uint CmdInit = 2;
    private const uint CmdShutdown = 3;
    private const uint CmdStop = 14;

    private readonly Socket _socket;

    private SwtpmControl(Socket socket) => _socket = socket;

    public static SwtpmControl ConnectTcp(string host, int port)
    {
        var s = new Socket(SocketType.Stream, ProtocolType.Tcp);
        return Open(s, () => s.Connect(host, port), $"{host}:{port}");
    }

    public static SwtpmControl ConnectUnix(string path)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        return Open(s, () => s.Connect(new UnixDomainSocketEndPoint(path)), path);
    }

    private static SwtpmControl Open(Socket s, Action connect, string where)
    {
        s.ReceiveTimeout = 30_000;
        s.SendTimeout = 30_000;
        try
        {
            connect();
        }
        catch (SocketException e)
        {
            s.Dispose();
            throw new TpmTransportException($"cannot connect to swtpm control channel {where}: {e.Message}", e);
        }
        return new SwtpmControl(s);
    }

    /// <summary>CMD_INIT: powers the TPM on (like TPM_Init); flags bit 0 deletes volatile state.</summary>
    public void Init(uint flags = 0)
    {
        Span<byte> buf = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32BigEndian(buf, CmdInit);
        BinaryPrimitives.WriteUInt32BigEndian(buf[4..], flags);
        Send(buf);
        Expect("CMD_INIT");
    }

    /// <summary>CMD_GET_CAPABILITY: the control channel's capability flags (proves it answers).</summary>
    public ulong GetCapability()
    {
        Span<byte> buf = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(buf, CmdGetCapability);
        Send(buf);
        Span<byte> resp = stackalloc byte[8];
        Receive(resp);
        return BinaryPrimitives.ReadUInt64BigEndian(resp);
    }

    /// <summary>CMD_SHUTDOWN: saves state and terminates swtpm.</summary>
    public void Shutdown()
    {
        Span<byte> buf = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(buf, CmdShutdown);
        Send(buf);
        Expect("CMD_SHUTDOWN");
    }

    /// <summary>CMD_STOP: stops the TPM without terminating swtpm.</summary>
    public void Stop()
    {
        Span<byte> buf = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(buf, CmdStop);
        Send(buf);
        Expect("CMD_STOP");
    }

    private void Send(ReadOnlySpan<byte> data)
    {
        try
        {
            _socket.Send(data);
        }
        catch (SocketException e)
        {
            throw new TpmTransportException($"swtpm control channel: {e.Message}", e);
        }
    }

    private void Receive(Span<byte> into)
    {
        int got = 0;
        try
        {
            while (got < into.Length)
            {
                int n = _socket.Receive(into[got..]);
                if (n == 0)
                {
                    throw new TpmTransportException("swtpm control channel closed");
                }
                got += n;
            }
        }
        catch (SocketException e)
        {
            throw new TpmTransportException($"swtpm control channel: {e.Message}", e);
        }
    }

    private void Expect(string what)
    {
        Span<byte> resp = stackalloc byte[4];
        Receive(resp);
        uint rc = BinaryPrimitives.ReadUInt32BigEndian(resp);
        if (rc != 0)
        {
            throw new TpmTransportException($"swtpm {what} failed with result 0x{rc:x}");
        }
    }

    public void Dispose() => _socket.Dispose();
}

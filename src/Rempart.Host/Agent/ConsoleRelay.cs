using System.Diagnostics;
using System.Net.Sockets;

namespace Rempart.Host.Agent;

/// <summary>Who is at the other end of the agent's unix socket, as the kernel says (<c>SO_PEERCRED</c>), not as the client claims.</summary>
public sealed record PeerCredentials(int Pid, uint Uid, uint Gid)
{
    /// <summary>The peer of a connected unix socket; null when the kernel does not say (not a unix socket).</summary>
    public static PeerCredentials? Of(Socket? socket)
    {
        if (socket is not { AddressFamily: AddressFamily.Unix })
        {
            return null;
        }
        Span<byte> ucred = stackalloc byte[12]; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        const int SolSocket = 1, SoPeerCred = 17; // Linux, socket(7)
        try
        {
            return socket.GetRawSocketOption(SolSocket, SoPeerCred, ucred) == 12
                ? new PeerCredentials(BitConverter.ToInt32(ucred), BitConverter.ToUInt32(ucred[4..]), BitConverter.ToUInt32(ucred[8..]))
                : null;
        }
        catch (SocketException)
        {
            return null;
        }
    }
}

/// <summary>How a console session ended and what went through it (the <c>vm.console.closed</c> record).</summary>
/// <param name="EndedBy"><c>client</c> (it closed its side), <c>vm</c> (QEMU closed the serial socket: the VM stopped), <c>agent</c> (the agent is stopping) or <c>error</c>.</param>
/// <param name="BytesToVm">What the client typed, relayed to the serial port.</param>
/// <param name="BytesFromVm">What the serial port printed, relayed to the client.</param>
/// <param name="DurationMs">From the relay's start to its end.</param>
public sealed record ConsoleSummary(string EndedBy, long BytesToVm, long BytesFromVm, long DurationMs);

/// <summary>
/// One console session of an encryption-supported VM, relayed by the agent between the client's
/// upgraded connection and QEMU's serial socket (issue 6 §3, G7): the client never gets the serial
/// socket itself, so the agent sees the whole session — opened and closed, with its byte counts —
/// and allows one at a time per VM (QEMU's serial socket takes one client; a second would hang).
/// </summary>
public sealed class ConsoleSession : IAsyncDisposable
{
    private readonly Socket _serial;
    private readonly Action<ConsoleSummary> _closed;
    private readonly Action _release;
    private int _relayed;

    internal ConsoleSession(string id, Socket serial, Action<ConsoleSummary> closed, Action release)
    {
        Id = id;
        _serial = serial;
        _closed = closed;
        _release = release;
    }

    /// <summary>Random, in both the opened and the closed record.</summary>
    public string Id { get; }

    /// <summary>
    /// Copies bytes both ways until one side closes or <paramref name="ct"/> fires, then records the
    /// session's end. Called once.
    /// </summary>
    public async Task<ConsoleSummary> RelayAsync(Stream client, CancellationToken ct)
    {
        if (Interlocked.CompareExchange(ref _relayed, 1, 0) != 0)
        {
            throw new InvalidOperationException("a console session is relayed once, before it is disposed");
        }
        var clock = Stopwatch.StartNew();
        long toVm = 0, fromVm = 0;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        await using var serial = new NetworkStream(_serial, ownsSocket: false);
        var up = PumpAsync(client, serial, n => Interlocked.Add(ref toVm, n), stop.Token);
        var down = PumpAsync(serial, client, n => Interlocked.Add(ref fromVm, n), stop.Token);
        var first = await Task.WhenAny(up, down).ConfigureAwait(false);
        string endedBy = ct.IsCancellationRequested ? "agent"
            : first.IsFaulted ? "error"
            : first == up ? "client" : "vm";
        await stop.CancelAsync().ConfigureAwait(false);
        try
        {
            _serial.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        await Task.WhenAll(up, down).ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default).ConfigureAwait(false);
        var summary = new ConsoleSummary(endedBy, Interlocked.Read(ref toVm), Interlocked.Read(ref fromVm), clock.ElapsedMilliseconds);
        _closed(summary);
        return summary;
    }

    /// <summary>Copies until end of stream; an I/O error or cancellation also ends it (the other side's end says who).</summary>
    private static async Task PumpAsync(Stream from, Stream to, Action<int> counted, CancellationToken ct)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            while (true)
            {
                int n = await from.ReadAsync(buffer, ct).ConfigureAwait(false);
                if (n == 0)
                {
                    return;
                }
                await to.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                await to.FlushAsync(ct).ConfigureAwait(false);
                counted(n);
            }
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException or SocketException)
        {
            // the connection is gone: the session ends
        }
    }

    /// <summary>Closes the serial connection and frees the VM's console; a session never relayed (the client left before the upgrade) is recorded as ended by an error.</summary>
    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _relayed, 2) == 0)
        {
            _closed(new ConsoleSummary("error", 0, 0, 0));
        }
        _serial.Dispose();
        _release();
        return ValueTask.CompletedTask;
    }
}

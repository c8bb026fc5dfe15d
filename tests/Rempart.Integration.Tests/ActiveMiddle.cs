using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Rempart.Host.Migration;

namespace Rempart.Integration.Tests;

/// <summary>
/// Someone sitting in the migration path, not just watching it (an attacker played by the test): it
/// accepts the source's connection and runs the handshake's key exchange with it as a destination
/// would, connects to the real destination and runs the exchange again as a source would, then
/// opens every handshake message of one side, keeps a copy, and seals it again for the other. It
/// reads all the handshake the two ends let it read; what they do not let it read is the point.
/// One connection, then it stops.
/// </summary>
internal sealed class ActiveMiddle : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _run;

    private ActiveMiddle(IPEndPoint listen, IPEndPoint destination)
    {
        _listener = new TcpListener(listen);
        _listener.Start();
        _run = Task.Run(() => RunAsync(destination));
    }

    /// <summary>Listens on <paramref name="listen"/> (port 0: any) and relays one connection to <paramref name="destination"/>.</summary>
    public static ActiveMiddle Start(IPEndPoint listen, IPEndPoint destination) => new(listen, destination);

    public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndpoint;

    /// <summary>Every handshake message it opened, in order: <c>to-source</c> or <c>to-destination</c>, and the message.</summary>
    public ConcurrentQueue<(string Direction, JsonObject Message)> Read { get; } = new();

    /// <summary>Why the relay ended (a side closed or refused), for the test's output.</summary>
    public string? Ended { get; private set; }

    private async Task RunAsync(IPEndPoint destination)
    {
        try
        {
            using var fromSource = await _listener.AcceptTcpClientAsync(_stop.Token);
            using var toDestination = new TcpClient(destination.AddressFamily);
            await toDestination.ConnectAsync(destination, _stop.Token);
            await using var source = new SecureChannel(fromSource.GetStream());
            await using var dest = new SecureChannel(toDestination.GetStream());
            await source.ProtectHandshakeAsync(initiator: false, MigrationKeys.Protocol, _stop.Token);
            await dest.ProtectHandshakeAsync(initiator: true, MigrationKeys.Protocol, _stop.Token);
            using var done = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            var pumps = new[] { PumpAsync(dest, source, "to-source", done.Token), PumpAsync(source, dest, "to-destination", done.Token) };
            await Task.WhenAny(pumps);
            done.Cancel(); // one side is gone: closing both channels (the usings) ends the other pump
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or IOException or MigrationChannelException)
        {
            Ended = e.Message;
        }
    }

    private async Task PumpAsync(SecureChannel from, SecureChannel to, string direction, CancellationToken ct)
    {
        try
        {
            while (true)
            {
                var message = await from.ReceiveHandshakeAsync(ct);
                Read.Enqueue((direction, (JsonObject)message.DeepClone()));
                await to.SendHandshakeAsync(message, ct);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or MigrationChannelException or ObjectDisposedException)
        {
            Ended ??= $"{direction}: {e.Message}";
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        await _run;
        _stop.Dispose();
    }
}

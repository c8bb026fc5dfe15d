using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Rempart.Host.Migration;

namespace Rempart.MigrationBench;

/// <summary>
/// `--relay-only`: the relay's own cost without QEMU or a guest. A producer writes random bytes into a
/// unix socket in 32 KiB pieces (as QEMU writes its stream), a consumer drains another; between them
/// either a direct unix socket (the baseline: what QEMU-to-QEMU costs the kernel) or the agent's relay
/// (PumpOut → sealed records over loopback TCP → PumpIn). Reports MB/s and this process's CPU seconds
/// per GB, both paths alternating in the same run.
/// </summary>
internal static class RelayOnly
{
    public static async Task<int> RunAsync(int mib, int rounds)
    {
        var data = RandomNumberGenerator.GetBytes(32 * 1024);
        long bytes = (long)mib << 20;
        var results = new List<(bool Relay, double MBps, double CpuPerGB)>();
        for (int round = 0; round < rounds; round++)
        {
            foreach (var relay in round % 2 == 0 ? new[] { false, true } : [true, false])
            {
                var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
                var sw = Stopwatch.StartNew();
                await OnceAsync(relay, data, bytes);
                sw.Stop();
                var cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
                var r = (relay, bytes / 1e6 / sw.Elapsed.TotalSeconds, cpu / (bytes / 1e9));
                results.Add(r);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"round {round} {(relay ? "relay " : "direct")}: {r.Item2,7:0} MB/s, {r.Item3:0.00} CPU s per GB (producer and consumer included)"));
            }
        }
        double Med(IEnumerable<double> v) { var a = v.Order().ToArray(); return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2; }
        var d = results.Where(r => !r.Relay).ToList();
        var e = results.Where(r => r.Relay).ToList();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"median: direct {Med(d.Select(r => r.MBps)):0} MB/s {Med(d.Select(r => r.CpuPerGB)):0.00} CPU s/GB; relay {Med(e.Select(r => r.MBps)):0} MB/s {Med(e.Select(r => r.CpuPerGB)):0.00} CPU s/GB; relay/direct throughput {Med(e.Select(r => r.MBps)) / Med(d.Select(r => r.MBps)):0.00}; relay's own CPU {Med(e.Select(r => r.CpuPerGB)) - Med(d.Select(r => r.CpuPerGB)):0.00} s/GB"));
        return 0;
    }

    private static async Task OnceAsync(bool relay, byte[] data, long bytes)
    {
        var (producerEnd, outEnd) = Pair();
        var (inEnd, consumerEnd) = relay ? Pair() : (outEnd, outEnd); // direct: the consumer reads the producer's pair
        var producer = Task.Factory.StartNew(() =>
        {
            long left = bytes;
            while (left > 0)
            {
                int n = (int)Math.Min(left, data.Length);
                producerEnd.Send(data, 0, n, SocketFlags.None);
                left -= n;
            }
            producerEnd.Shutdown(SocketShutdown.Send);
        }, TaskCreationOptions.LongRunning);
        var consumer = Task.Factory.StartNew(() =>
        {
            var buf = new byte[32 * 1024];
            long got = 0;
            int n;
            while ((n = consumerEnd.Receive(buf)) > 0)
            {
                got += n;
            }
            if (got != bytes)
            {
                throw new InvalidOperationException($"{got} bytes arrived of {bytes}");
            }
        }, TaskCreationOptions.LongRunning);
        if (relay)
        {
            var (sending, receiving) = await LoopbackChannelsAsync();
            await using var _s = sending;
            await using var _r = receiving;
            await using var into = new NetworkStream(inEnd, ownsSocket: false);
            await Task.WhenAll(
                Task.Run(async () =>
                {
                    var n = await MigrationRelay.PumpOutAsync(outEnd, sending, CancellationToken.None);
                    await sending.SendControlAsync(new JsonObject { ["type"] = "stream-end", ["bytes"] = n }, CancellationToken.None);
                }),
                Task.Run(async () =>
                {
                    await MigrationRelay.PumpInAsync(receiving, into, [], CancellationToken.None);
                    inEnd.Shutdown(SocketShutdown.Send);
                }));
        }
        await producer;
        await consumer;
        foreach (var s in new[] { producerEnd, outEnd, inEnd, consumerEnd }.Distinct())
        {
            s.Dispose();
        }
    }

    /// <summary>The two ends of the agents' channel over one loopback TCP connection, keyed with fresh random keys (the handshake is not measured).</summary>
    internal static async Task<(SecureChannel Sending, SecureChannel Receiving)> LoopbackChannelsAsync()
    {
        var tcp = new TcpListener(IPAddress.Loopback, 0);
        tcp.Start();
        var client = new TcpClient { NoDelay = true };
        await client.ConnectAsync(IPAddress.Loopback, ((IPEndPoint)tcp.LocalEndpoint).Port);
        var server = await tcp.AcceptTcpClientAsync();
        server.NoDelay = true;
        tcp.Stop();
        var s2d = RandomNumberGenerator.GetBytes(32);
        var d2s = RandomNumberGenerator.GetBytes(32);
        var sending = new SecureChannel(client.GetStream());
        sending.Key(s2d, d2s);
        var receiving = new SecureChannel(server.GetStream());
        receiving.Key(d2s, s2d);
        return (sending, receiving);
    }

    private static (Socket, Socket) Pair()
    {
        var path = Path.Combine(Path.GetTempPath(), $"relay-{Guid.NewGuid():N}.sock");
        using var l = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        l.Bind(new UnixDomainSocketEndPoint(path));
        l.Listen(1);
        var a = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        a.Connect(new UnixDomainSocketEndPoint(path));
        var b = l.Accept();
        File.Delete(path);
        return (a, b);
    }
}

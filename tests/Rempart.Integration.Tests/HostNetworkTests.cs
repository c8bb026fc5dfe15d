using System.Diagnostics;
using System.Security.Cryptography;
using Rempart.Tpm.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Rempart.Integration.Tests;

/// <summary>Network namespaces, veths and packet captures are timing-sensitive on a small machine: these tests run alone.</summary>
[CollectionDefinition(nameof(HostNetworkCollection), DisableParallelization = true)]
public sealed class HostNetworkCollection;

/// <summary>
/// The two-hosts-on-one-machine harness of the live-migration tests (issue 7 §2): the capture's
/// positive control (a marker sent across the migration link, split over two segments, is found
/// in the reassembled stream; one never sent is not; nothing was dropped), and two agents in their
/// namespaces enrolled and affirming against one Guardian. Real ip, dumpcap, tshark, swtpm and
/// Guardian; fails when a tool is missing.
/// </summary>
[Collection(nameof(HostNetworkCollection))]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class HostNetworkTests(ITestOutputHelper output)
{
    private const int Segment = 1448;

    [Fact(Timeout = 300_000)]
    public async Task A_capture_on_the_migration_link_has_no_drops_and_finds_a_marker_split_across_segments_but_not_one_never_sent()
    {
        var dir = Directory.CreateTempSubdirectory("rempart-capture-").FullName;
        try
        {
            using var net = new HostNetwork();
            var payload = RandomNumberGenerator.GetBytes(2 * 1024 * 1024 + 4096);
            var marker = RandomNumberGenerator.GetBytes(32);
            var neverSent = RandomNumberGenerator.GetBytes(32);
            // The marker straddles a 1448-byte segment boundary, and the sender pauses there, so two packets carry it whatever the offloads do.
            int split = Segment * 700;
            marker.CopyTo(payload, split - marker.Length / 2);
            var file = Path.Combine(dir, "payload.bin");
            await File.WriteAllBytesAsync(file, payload);

            await using var capture = await PacketCapture.StartAsync(net.NamespaceA, HostNetwork.MigrationInterface, Path.Combine(dir, "mig.pcapng"));
            int received = await SendAsync(net, file, split);
            var result = await capture.StopAsync();
            output.WriteLine(result.Statistics.Line);

            Assert.Equal(payload.Length, received);
            Assert.Equal(0, result.Dropped);
            Assert.True(result.Packets > 0, result.Statistics.Line);
            Assert.True(result.TcpPayloadBytes >= 2 * 1024 * 1024, $"{result.TcpPayloadBytes} TCP payload bytes");
            Assert.Contains(result.TcpStreams(), s => s.AsSpan().SequenceEqual(payload));
            Assert.True(result.Contains(marker), "the marker sent across the link is not in the reassembled stream");
            Assert.False(result.Contains(neverSent), "a marker never sent was found");
            // The raw capture does not hold the marker in one piece: only reassembly finds it.
            Assert.True((await File.ReadAllBytesAsync(result.PcapPath)).AsSpan().IndexOf(marker) < 0, "the marker is whole in one packet: the control does not exercise reassembly");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact(Timeout = 900_000)]
    public async Task Two_agents_in_their_namespaces_enrol_and_affirm_against_one_Guardian_over_the_bridge()
    {
        var started = Stopwatch.StartNew();
        await using var h = await TwoHostHarness.StartAsync("migration", log: output.WriteLine);
        output.WriteLine($"two hosts affirming after {started.Elapsed.TotalSeconds:0.0} s");

        foreach (var host in new[] { h.A, h.B })
        {
            var status = await host.StatusAsync();
            Assert.Equal("affirming", status["state"]?.GetValue<string>());
            Assert.Equal(host.HostId, status["hostId"]?.GetValue<string>());
            Assert.False(host.AgentExited, host.Output());
        }
        Assert.False(string.IsNullOrEmpty(h.A.HostId));
        Assert.NotEqual(h.A.HostId, h.B.HostId);
        Assert.Equal($"10.{h.Network.Subnet}.1.1:7070", h.A.MigrationAddress);
        Assert.Equal($"10.{h.Network.Subnet}.1.2:7070", h.B.MigrationAddress);
        Assert.Contains(h.A.HostId, h.A.Cli("host", "status").Ok().Stdout, StringComparison.Ordinal);

        // Each agent listens for migrations on its end of the link, and the other namespace reaches it.
        foreach (var (from, to) in new[] { (h.Network.NamespaceA, h.B), (h.Network.NamespaceB, h.A) })
        {
            var said = await ConnectAsync(from, to.MigrationEndPoint);
            output.WriteLine($"{from} -> {to.MigrationAddress}: {said}");
            Assert.True(said == "connected", $"{from} -> {to.MigrationAddress}: {said}\n{to.Output()}");
        }

        // Failure injection: an agent killed, then restarted on its folders, keeps its identity.
        h.A.KillAgent();
        Assert.True(h.A.AgentExited);
        await h.A.RestartAgentAsync();
        await h.A.WaitStateAsync("affirming", "attests again after the restart");
        Assert.Equal(h.A.HostId, (await h.A.StatusAsync())["hostId"]?.GetValue<string>());
    }

    [Theory]
    [InlineData("kernel-drop", "Packets received/dropped on interface 'mig': 100/3 (pcap:3/dumpcap:0/flushed:0/ps_ifdrop:0) (97.1%)")]
    [InlineData("dumpcap-drop", "Packets received/dropped on interface 'mig': 100/0 (pcap:0/dumpcap:2/flushed:0/ps_ifdrop:0)")]
    [InlineData("interface-drop", "Packets received/dropped on interface 'mig': 100/0 (pcap:0/dumpcap:0/flushed:0/ps_ifdrop:1)")]
    [InlineData("no-statistics", "Capturing on 'mig'\nFile: /tmp/x.pcapng\n")]
    public void A_capture_with_any_drop_or_without_statistics_is_not_clean(string name, string stderr)
    {
        var e = Assert.Throws<InvalidOperationException>(() => PacketCapture.ParseStatistics(stderr, "mig"));
        Assert.Contains(name == "no-statistics" ? "no statistics" : "dropped", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_clean_capture_s_statistics_are_read()
    {
        var stats = PacketCapture.ParseStatistics("Capturing on 'mig'\nFile: x\nPackets captured: 89\nPackets received/dropped on interface 'mig': 89/0 (pcap:0/dumpcap:0/flushed:0/ps_ifdrop:0)\n", "mig");
        Assert.Equal((89L, 0L), (stats.Packets, stats.Dropped));
    }

    [Fact]
    public void Tshark_follow_output_is_read_per_stream_and_direction()
    {
        const string text = "\n===================================================================\nFollow: tcp,raw\nFilter: tcp.stream eq 1\nNode 0: :0\nNode 1: :0\n"
            + "===================================================================\n\n===================================================================\nFollow: tcp,raw\n"
            + "Filter: tcp.stream eq 0\nNode 0: 127.0.0.1:48138\nNode 1: 127.0.0.1:7999\n68656c\n\t776f726c64\n6c6f\n===================================================================\n";
        var streams = CaptureResult.ParseFollow(text).OrderBy(s => s.Index).ToList();
        Assert.Equal([0, 1], streams.Select(s => s.Index));
        Assert.Equal("hello"u8.ToArray(), streams[0].ClientToServer);
        Assert.Equal("world"u8.ToArray(), streams[0].ServerToClient);
        Assert.Equal("127.0.0.1:7999", streams[0].Server);
        Assert.Empty(streams[1].ClientToServer);
        Assert.Throws<InvalidOperationException>(() => CaptureResult.ParseFollow(text[..^68]).ToList());
    }

    [Fact]
    public void A_failing_ip_command_names_the_command_and_ip_s_error()
    {
        var e = Assert.Throws<InvalidOperationException>(() => HostNetwork.Ip("link", "del", "rp-no-such-if"));
        Assert.Contains("'ip link del rp-no-such-if'", e.Message, StringComparison.Ordinal);
        Assert.Contains("Cannot find device", e.Message, StringComparison.Ordinal);
    }

    /// <summary>Sends <paramref name="file"/> from namespace a to a receiver in namespace b over the migration link, pausing after <paramref name="split"/> bytes; returns what b received.</summary>
    private static async Task<int> SendAsync(HostNetwork net, string file, int split)
    {
        const string server = """
            import socket, sys
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((sys.argv[1], 7171))
            s.listen(1)
            print("ready", flush=True)
            c, _ = s.accept()
            n = 0
            while True:
                d = c.recv(1 << 16)
                if not d:
                    break
                n += len(d)
            c.close()
            print(n, flush=True)
            """;
        const string client = """
            import socket, sys, time
            data = open(sys.argv[2], "rb").read()
            split = int(sys.argv[3])
            c = socket.create_connection((sys.argv[1], 7171), timeout=60)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.sendall(data[:split])
            time.sleep(0.3)
            c.sendall(data[split:])
            c.shutdown(socket.SHUT_WR)
            c.recv(1)
            """;
        var addr = net.MigrationAddressB.ToString();
        var python = Tool.Which("python3");
        using var receiver = Process.Start(HostNetwork.InNamespace(net.NamespaceB, python, ["-c", server, addr]))!;
        var ready = await receiver.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30));
        if (ready != "ready")
        {
            receiver.Kill();
            Assert.Fail($"the receiver did not start: {ready} {await receiver.StandardError.ReadToEndAsync()}");
        }
        using var sender = Process.Start(HostNetwork.InNamespace(net.NamespaceA, python, ["-c", client, addr, file, split.ToString(System.Globalization.CultureInfo.InvariantCulture)]))!;
        var senderErr = sender.StandardError.ReadToEndAsync();
        await sender.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        if (sender.ExitCode != 0)
        {
            receiver.Kill();
            Assert.Fail("the sender failed: " + await senderErr);
        }
        var count = await receiver.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30));
        await receiver.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        return int.Parse(count!, System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>A TCP connection from namespace <paramref name="ns"/>: "connected", "refused", or what else happened.</summary>
    private static async Task<string> ConnectAsync(string ns, System.Net.IPEndPoint to)
    {
        var script = $"""
            import socket
            try:
                socket.create_connection(("{to.Address}", {to.Port}), timeout=5).close()
                print("connected")
            except ConnectionRefusedError:
                print("refused")
            except Exception as e:
                print(type(e).__name__, e)
            """;
        var r = await Task.Run(() => Tool.Run("ip", ["netns", "exec", ns, Tool.Which("python3"), "-c", script]));
        return r.Stdout.Trim() is { Length: > 0 } said ? said : $"no answer (exit {r.ExitCode}): {r.Stderr.Trim()}";
    }
}

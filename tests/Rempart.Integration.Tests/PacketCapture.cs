using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Integration.Tests;

/// <summary>
/// A packet capture with dumpcap (Wireshark's capture engine, package wireshark-common) on one
/// interface of a network namespace, whole packets (-s 0) to a pcapng file. It counts as a capture
/// only when the file holds the end-of-capture frame sent just before stopping and dumpcap reports
/// that the interface dropped nothing: a capture with a gap could hide a leak, so
/// <see cref="StopAsync"/> throws then. Needs python3 (the end-of-capture frame) in the namespace.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed partial class PacketCapture : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();
    private readonly TaskCompletionSource _live = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private bool _stopped;

    private PacketCapture(Process process, string ns, string iface, string path)
    {
        _process = process;
        Namespace = ns;
        Interface = iface;
        PcapPath = path;
    }

    public string Namespace { get; }

    public string Interface { get; }

    public string PcapPath { get; }

    /// <summary>Starts dumpcap on <paramref name="iface"/> in <paramref name="ns"/>; returns once it captures (it said "Capturing on").</summary>
    public static async Task<PacketCapture> StartAsync(string ns, string iface, string pcapPath)
    {
        var psi = HostNetwork.InNamespace(ns, Tool.Which("dumpcap"), ["-i", iface, "-w", pcapPath, "-s", "0", "-B", "64", "-q"]);
        var capture = new PacketCapture(Process.Start(psi) ?? throw new InvalidOperationException("cannot start dumpcap"), ns, iface, pcapPath);
        capture._process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                capture._live.TrySetException(new InvalidOperationException($"dumpcap on {iface} in {ns} ended before capturing: {capture.Stderr}"));
                return;
            }
            lock (capture._stderr)
            {
                capture._stderr.AppendLine(e.Data);
            }
            if (e.Data.StartsWith("Capturing on", StringComparison.Ordinal))
            {
                capture._live.TrySetResult();
            }
        };
        capture._process.OutputDataReceived += (_, _) => { };
        capture._process.BeginErrorReadLine();
        capture._process.BeginOutputReadLine();
        try
        {
            await capture._live.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }
        catch (TimeoutException)
        {
            await capture.DisposeAsync();
            throw new TimeoutException($"dumpcap on {iface} in {ns} did not start capturing in 30 s: {capture.Stderr}");
        }
        return capture;
    }

    /// <summary>What dumpcap said so far.</summary>
    public string Stderr
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    /// <summary>
    /// Stops the capture and checks that it is whole. dumpcap reads the kernel's ring a block at a
    /// time, and a block is handed over when full or after a timeout (250 ms): on SIGINT the packets
    /// of the last, partial block are lost, and its statistics do not count them as dropped (seen
    /// here: the last ~100 KB of a 2 MiB transfer missing, "received/dropped 78/0"). So an
    /// end-of-capture frame (a raw Ethernet frame with a random token, local experimental ethertype
    /// 0x88B5) is sent out of the interface first, and dumpcap is stopped only once the file holds
    /// it: everything the interface carried before it is then in the file. The statistics must then
    /// show no drop.
    /// </summary>
    public async Task<CaptureResult> StopAsync()
    {
        _stopped = true;
        var token = Encoding.ASCII.GetBytes("rempart-capture-end-" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16)));
        await SendEndFrameAsync(token);
        var until = DateTime.UtcNow.AddSeconds(30);
        while (!FileHolds(token) && DateTime.UtcNow < until && !_process.HasExited)
        {
            await Task.Delay(100);
        }
        Posix.Signal(_process.Id, Posix.SIGINT);
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
        {
            try
            {
                await _process.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                _process.Kill();
                throw new TimeoutException($"dumpcap did not stop in 60 s after SIGINT: {Stderr}");
            }
        }
        var stderr = Stderr;
        if (_process.ExitCode != 0)
        {
            throw new InvalidOperationException($"dumpcap exited with {_process.ExitCode}: {stderr}");
        }
        if (!FileHolds(token))
        {
            throw new InvalidOperationException($"the capture on {Interface} in {Namespace} does not hold its end-of-capture frame: packets before it may be missing\n{stderr}");
        }
        return new CaptureResult(PcapPath, ParseStatistics(stderr, Interface));
    }

    private bool FileHolds(byte[] token)
    {
        try
        {
            using var f = new FileStream(PcapPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            var bytes = new byte[f.Length];
            f.ReadExactly(bytes);
            return bytes.AsSpan().IndexOf(token) >= 0;
        }
        catch (IOException)
        {
            return false;
        }
    }

    private async Task SendEndFrameAsync(byte[] token)
    {
        const string send = """
            import socket, sys
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind((sys.argv[1], 0))
            s.send(b"\xff" * 6 + b"\x02" + b"\x00" * 5 + b"\x88\xb5" + bytes.fromhex(sys.argv[2]) + b"\x00" * 16)
            """;
        using var p = Process.Start(HostNetwork.InNamespace(Namespace, Tool.Which("python3"), ["-c", send, Interface, Convert.ToHexStringLower(token)]))
            ?? throw new InvalidOperationException("cannot start python3");
        var err = p.StandardError.ReadToEndAsync();
        _ = p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"could not send the end-of-capture frame on {Interface} in {Namespace}: {await err}");
        }
    }

    /// <summary>
    /// dumpcap's final line per interface: <c>Packets received/dropped on interface 'mig': 123/0
    /// (pcap:0/dumpcap:0/flushed:0/ps_ifdrop:0) (0.0%)</c>. Missing statistics, or any drop in
    /// the total or its parts (kernel buffer, dumpcap, flush, interface), throw.
    /// </summary>
    public static CaptureStatistics ParseStatistics(string stderr, string iface)
    {
        var m = StatsLine().Match(stderr);
        if (!m.Success)
        {
            throw new InvalidOperationException($"dumpcap printed no statistics for {iface}: a capture without them is not a clean capture:\n{stderr}");
        }
        long received = long.Parse(m.Groups["received"].Value, CultureInfo.InvariantCulture);
        long dropped = long.Parse(m.Groups["dropped"].Value, CultureInfo.InvariantCulture);
        var parts = PartCounter().Matches(m.Groups["parts"].Value).ToDictionary(p => p.Groups[1].Value, p => long.Parse(p.Groups[2].Value, CultureInfo.InvariantCulture));
        if (dropped != 0 || parts.Values.Any(v => v != 0))
        {
            throw new InvalidOperationException($"the capture on {iface} dropped packets, it may have missed a leak: {m.Value}");
        }
        return new CaptureStatistics(received, dropped, m.Value);
    }

    [GeneratedRegex(@"Packets received/dropped on interface '[^']*': (?<received>\d+)/(?<dropped>\d+) \((?<parts>[^)]*)\)")]
    private static partial Regex StatsLine();

    [GeneratedRegex(@"([a-z_]+):(\d+)")]
    private static partial Regex PartCounter();

    /// <summary>Kills dumpcap when the capture was not stopped (a failed test).</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_stopped && !_process.HasExited)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}

/// <summary>dumpcap's count of packets for the interface, and the line it came from.</summary>
public sealed record CaptureStatistics(long Packets, long Dropped, string Line);

/// <summary>
/// A clean capture (no drops) and its TCP content: every TCP stream reassembled by tshark in each
/// direction, so that a marker split across segments is still found.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class CaptureResult(string path, CaptureStatistics statistics)
{
    private IReadOnlyList<TcpStream>? _streams;

    public string PcapPath => path;

    public long Packets => statistics.Packets;

    public long Dropped => statistics.Dropped;

    public CaptureStatistics Statistics => statistics;

    /// <summary>Every TCP stream of the capture, each direction reassembled in sequence order (tshark's follow,tcp,raw).</summary>
    public IReadOnlyList<TcpStream> Streams() => _streams ??= ReadStreams(path);

    /// <summary>The reassembled payload of every TCP stream, one entry per direction (client to server, then server to client).</summary>
    public IReadOnlyList<byte[]> TcpStreams() => Streams().SelectMany(s => new[] { s.ClientToServer, s.ServerToClient }).ToList();

    /// <summary>All reassembled TCP payload bytes, both directions of every stream.</summary>
    public long TcpPayloadBytes => Streams().Sum(s => (long)s.ClientToServer.Length + s.ServerToClient.Length);

    /// <summary>Whether <paramref name="needle"/> occurs in one direction of one TCP stream.</summary>
    public bool Contains(byte[] needle) => TcpStreams().Any(s => s.AsSpan().IndexOf(needle) >= 0);

    private static List<TcpStream> ReadStreams(string path)
    {
        var ids = Tool.Run("tshark", ["-r", path, "-Y", "tcp", "-T", "fields", "-e", "tcp.stream"], timeoutMs: 600_000).Ok().Stdout
            .Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => int.Parse(s, CultureInfo.InvariantCulture)).Distinct().Order().ToList();
        var streams = new List<TcpStream>();
        // One pass over the file for a batch of streams: tshark runs every -z follow in the same pass.
        foreach (var batch in ids.Chunk(64))
        {
            var args = new List<string> { "-r", path, "-q" };
            foreach (var id in batch)
            {
                args.AddRange(["-z", $"follow,tcp,raw,{id}"]);
            }
            streams.AddRange(Follow(args));
        }
        if (streams.Count != ids.Count)
        {
            throw new InvalidOperationException($"tshark followed {streams.Count} TCP streams of {ids.Count} in {path}");
        }
        return streams;
    }

    /// <summary>
    /// tshark's <c>-z follow,tcp,raw,N</c> blocks: a header (Filter: tcp.stream eq N, Node 0: client,
    /// Node 1: server), then one hex line per chunk in order, the server's indented by a tab.
    /// </summary>
    public static IEnumerable<TcpStream> ParseFollow(string text) => ParseFollow(new StringReader(text));

    /// <summary>
    /// Runs tshark and parses its follow output as it comes: a migration's capture holds hundreds of
    /// megabytes, which as one hex string would take four times that in memory.
    /// </summary>
    private static List<TcpStream> Follow(List<string> args)
    {
        var psi = new ProcessStartInfo(Tool.Which("tshark")) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start tshark");
        var stderr = p.StandardError.ReadToEndAsync();
        var streams = ParseFollow(p.StandardOutput).ToList();
        if (!p.WaitForExit(600_000))
        {
            p.Kill();
            throw new TimeoutException($"tshark {string.Join(' ', args)} did not finish in 10 minutes");
        }
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"tshark {string.Join(' ', args)} exited with {p.ExitCode}: {stderr.Result}");
        }
        return streams;
    }

    public static IEnumerable<TcpStream> ParseFollow(TextReader reader)
    {
        TcpStream? current = null;
        MemoryStream c2s = new(), s2c = new();
        string client = "", server = "";
        int index = -1;
        while (reader.ReadLine() is { } line)
        {
            if (line.StartsWith("=====", StringComparison.Ordinal))
            {
                if (index >= 0)
                {
                    current = new TcpStream(index, client, server, c2s.ToArray(), s2c.ToArray());
                    yield return current;
                    index = -1;
                    c2s = new MemoryStream();
                    s2c = new MemoryStream();
                }
                continue;
            }
            if (line.StartsWith("Filter: tcp.stream eq ", StringComparison.Ordinal))
            {
                index = int.Parse(line[22..].Trim(), CultureInfo.InvariantCulture);
            }
            else if (line.StartsWith("Node 0: ", StringComparison.Ordinal))
            {
                client = line[8..];
            }
            else if (line.StartsWith("Node 1: ", StringComparison.Ordinal))
            {
                server = line[8..];
            }
            else if (index >= 0 && line.Length > 0 && !line.StartsWith("Follow: ", StringComparison.Ordinal))
            {
                var toClient = line[0] == '\t';
                (toClient ? s2c : c2s).Write(Convert.FromHexString(line.Trim()));
            }
        }
        if (index >= 0)
        {
            throw new InvalidOperationException($"tshark's follow output of stream {index} is truncated");
        }
    }
}

/// <summary>One TCP stream of a capture, each direction's payload reassembled.</summary>
public sealed record TcpStream(int Index, string Client, string Server, byte[] ClientToServer, byte[] ServerToClient);

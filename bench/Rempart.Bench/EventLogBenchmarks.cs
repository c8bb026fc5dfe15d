using BenchmarkDotNet.Attributes;
using Rempart.Attestation.EventLog;

namespace Rempart.Bench;

/// <summary>
/// Event log parsing and replay, the Guardian's hot path (thousands of hosts, logs of hundreds
/// of events, all day). The log is a real one from ../shared/fixtures/eventlogs (REMPART_FIXTURES
/// overrides): go-tpm-tools' gdc-host, 159 events, SHA-256 only, so each replayed event is one
/// SHA-256 over 64 bytes (old PCR value ‖ digest) — the unit `openssl speed -evp sha256 -bytes 64`
/// measures. bench/eventlog-vs-openssl.sh runs both and prints the ratio.
/// </summary>
[MemoryDiagnoser]
public class EventLogBenchmarks
{
    private byte[] _raw = [];
    private ParsedEventLog _log = null!;

    /// <summary>Events that replay extends (the Spec ID header and EV_NO_ACTION are not).</summary>
    public int ExtendedEvents { get; private set; }

    [GlobalSetup]
    public void Setup()
    {
        var dir = Environment.GetEnvironmentVariable("REMPART_FIXTURES") ?? FindFixtures();
        _raw = File.ReadAllBytes(Path.Combine(dir, "go-tpm-tools__gdc-host.bin"));
        _log = EventLogParser.Parse(_raw);
        ExtendedEvents = _log.Events.Count(e => e.Number > 0 && e.UntrustedType != TcgEventType.NoAction && e.Pcr < 24);
        if (EventLogReplay.Replay(_log).Banks.Count != 1)
        {
            throw new InvalidOperationException("expected a SHA-256-only log");
        }
    }

    internal static string FindFixtures()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null)
        {
            var candidate = Path.Combine(dir.FullName, "..", "shared", "fixtures", "eventlogs");
            if (Directory.Exists(candidate))
            {
                return Path.GetFullPath(candidate);
            }
            dir = dir.Parent;
        }
        throw new DirectoryNotFoundException("../shared/fixtures/eventlogs not found; set REMPART_FIXTURES");
    }

    [Benchmark]
    public ParsedEventLog Parse() => EventLogParser.Parse(_raw);

    [Benchmark]
    public ReplayResult Replay() => EventLogReplay.Replay(_log);

    [Benchmark]
    public ReplayResult ParseAndReplay() => EventLogReplay.Replay(EventLogParser.Parse(_raw));
}

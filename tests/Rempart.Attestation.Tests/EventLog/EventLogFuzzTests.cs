using System.Buffers.Binary;
using System.Diagnostics;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Tests.EventLog;

/// <summary>
/// Mutation fuzzing of the parser and replay over every fixture log: truncations, bit flips,
/// inserted and deleted bytes, and size fields set to extremes. Only EventLogFormatException
/// may come out; time and allocation stay bounded.
/// </summary>
public sealed class EventLogFuzzTests
{
    public static TheoryData<string> Logs() =>
        [.. Fixtures.BinaryLogs().Where(n => !n.EndsWith("-bogus", StringComparison.Ordinal) && !n.EndsWith("-empty", StringComparison.Ordinal) && n != "tpm2-tools__specid-vendordata.bin")];

    [Theory]
    [MemberData(nameof(Logs))]
    public void Mutations_give_only_the_format_error_in_bounded_time(string name)
    {
        var original = Fixtures.Bytes(name);
        var rng = new Random(name.Aggregate(17, (h, c) => (h * 31) + c));
        var sw = Stopwatch.StartNew();
        int parsed = 0, rejected = 0;
        for (int i = 0; i < 400; i++)
        {
            var m = Mutate(original, rng);
            try
            {
                var log = EventLogParser.Parse(m);
                EventLogReplay.Replay(log);
                foreach (var e in log.Events)
                {
                    EventDataDigests.Check(e);
                }
                parsed++;
            }
            catch (EventLogFormatException)
            {
                rejected++;
            }
        }
        Assert.Equal(400, parsed + rejected);
        Assert.True(rejected > 0, "no mutation was rejected: the mutator is not doing its job");
        // Generous bound (a shared 2-core machine): 400 parses of a log of at most a few hundred events.
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"400 mutations took {sw.Elapsed}");
    }

    [Theory]
    [MemberData(nameof(Logs))]
    public void Every_truncation_parses_a_prefix_or_is_the_format_error(string name)
    {
        var original = Fixtures.Bytes(name);
        int step = Math.Max(1, original.Length / 300);
        for (int len = 0; len < original.Length; len += step)
        {
            try
            {
                var log = EventLogParser.Parse(original.AsMemory(0, len));
                // A truncation that still parses ends exactly on an event boundary (or zero padding).
                Assert.True(log.Events.Count <= EventLogParser.Parse(original).Events.Count);
            }
            catch (EventLogFormatException e)
            {
                Assert.InRange(e.Offset, 0, len);
            }
        }
    }

    [Fact]
    public void An_event_claiming_a_huge_size_allocates_nothing_large()
    {
        var log = Fixtures.Bytes("go-tpm-tools__gdc-host.bin");
        var parsed = EventLogParser.Parse(log);
        var e = parsed.Events[5];
        // eventSize sits just before the data: set it to 0xFFFFFFF0.
        long sizeAt = e.Offset + (e.Number == 0 ? 28 : 4 + 4 + 4 + e.Digests.Sum(d => 2 + d.Digest.Length));
        var m = (byte[])log.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(m.AsSpan((int)sizeAt), 0xFFFFFFF0);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var ex = Assert.Throws<EventLogFormatException>(() => EventLogParser.Parse(m));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(sizeAt + 4, ex.Offset);
        Assert.True(allocated < 256 * 1024, $"{allocated} bytes allocated");

        // A huge digest count is refused before any digest is read.
        var m2 = (byte[])log.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(m2.AsSpan((int)e.Offset + 8), 0x7FFFFFFF);
        var ex2 = Assert.Throws<EventLogFormatException>(() => EventLogParser.Parse(m2));
        Assert.Equal(e.Offset + 8, ex2.Offset);
    }

    [Theory]
    [InlineData("spec_id_zero_algorithms", 0)]
    [InlineData("spec_id_digest_size_wrong", 1)]
    [InlineData("spec_id_duplicate_algorithm", 2)]
    [InlineData("event_unknown_algorithm", 3)]
    [InlineData("event_more_digests_than_declared_banks", 4)]
    public void Malformed_crypto_agile_logs_are_named(string name, int kind)
    {
        // Built by hand from PFP §10.4.5.1 (TCG_EfiSpecIDEvent) and §10.2.2 (TCG_PCR_EVENT2).
        var w = new List<byte>();
        void U32(uint v) => w.AddRange(BitConverter.GetBytes(v));
        void U16(ushort v) => w.AddRange(BitConverter.GetBytes(v));
        var algs = kind switch
        {
            0 => Array.Empty<(ushort, ushort)>(),
            1 => [(0x000B, 20)],
            2 => [(0x000B, 32), (0x000B, 32)],
            _ => [(0x000B, 32)],
        };
        var spec = new List<byte>();
        spec.AddRange(EventLogParser.SpecIdSignature);
        spec.AddRange(BitConverter.GetBytes(0u)); // platformClass
        spec.AddRange([0, 2, 0, 2]);              // minor, major, errata, uintnSize
        spec.AddRange(BitConverter.GetBytes((uint)algs.Length));
        foreach (var (a, s) in algs)
        {
            spec.AddRange(BitConverter.GetBytes(a));
            spec.AddRange(BitConverter.GetBytes(s));
        }
        spec.Add(0); // vendorInfoSize
        U32(0); U32(3); w.AddRange(new byte[20]); U32((uint)spec.Count); w.AddRange(spec);
        int eventAt = w.Count;
        U32(4); U32(4); // PCR 4, EV_SEPARATOR
        if (kind == 3)
        {
            U32(1); U16(0x0004); w.AddRange(new byte[20]);
        }
        else if (kind == 4)
        {
            U32(2); U16(0x000B); w.AddRange(new byte[32]); U16(0x000B); w.AddRange(new byte[32]);
        }
        else
        {
            U32(1); U16(0x000B); w.AddRange(new byte[32]);
        }
        U32(4); U32(0);
        var ex = Assert.Throws<EventLogFormatException>(() => EventLogParser.Parse(w.ToArray()));
        long expected = kind switch
        {
            0 => 32 + 24,                      // numberOfAlgorithms
            1 => 32 + 28,                      // the first algorithm entry
            2 => 32 + 28 + 4,                  // the second (duplicate) entry
            3 => eventAt + 12,                 // the digest's algorithm id
            _ => eventAt + 8,                  // the digest count
        };
        Assert.True(expected == ex.Offset, $"{name}: offset {ex.Offset}, expected {expected}: {ex.Message}");
    }

    private static byte[] Mutate(byte[] original, Random rng)
    {
        var b = new List<byte>(original);
        int ops = 1 + rng.Next(3);
        for (int i = 0; i < ops && b.Count > 0; i++)
        {
            int at = rng.Next(b.Count);
            switch (rng.Next(6))
            {
                case 0:
                    b[at] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1:
                    b.RemoveRange(at, Math.Min(b.Count - at, 1 + rng.Next(16)));
                    break;
                case 2:
                    b.InsertRange(at, Enumerable.Range(0, 1 + rng.Next(8)).Select(_ => (byte)rng.Next(256)));
                    break;
                case 3:
                    b.RemoveRange(at, b.Count - at);
                    break;
                case 4 when at + 4 <= b.Count:
                    var v = rng.Next(3) switch { 0 => 0u, 1 => 0xFFFFFFFFu, _ => (uint)rng.Next() };
                    var bytes = BitConverter.GetBytes(v);
                    for (int k = 0; k < 4; k++)
                    {
                        b[at + k] = bytes[k];
                    }
                    break;
                default:
                    b[at] = (byte)rng.Next(256);
                    break;
            }
        }
        return [.. b];
    }
}

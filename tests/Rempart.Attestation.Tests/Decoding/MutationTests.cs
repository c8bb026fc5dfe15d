using Rempart.Attestation.Decoding;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Tests.Decoding;

/// <summary>
/// Every decodable event of every fixture, mutated a few hundred times (seeded, so a failure
/// reproduces): bytes flipped, lengths overwritten with huge values, data truncated or extended.
/// Decoding must never throw, rendering must never throw (nor put a control character in the
/// one-line summary, which a terminal would interpret), and no decode may allocate far beyond
/// the size of the data it was given (a declared length is checked before it is used).
/// </summary>
public sealed class MutationTests
{
    private const int MutationsPerEvent = 300;

    /// <summary>Rendering (JSON and text) costs more than decoding; every third result is rendered.</summary>
    private const int RenderEvery = 3;

    public static TheoryData<string> Logs() => DecodingFixtures.Theory();

    [Theory]
    [MemberData(nameof(Logs))]
    public void Mutated_event_data_never_throws(string name)
    {
        int decoded = 0, errors = 0;
        foreach (var e in DecodingFixtures.Log(name).Events)
        {
            if (EventDataDecoder.Decode(e) is RawData)
            {
                continue;
            }
            var random = new Random(Seed(name, e.Number));
            for (int i = 0; i < MutationsPerEvent; i++)
            {
                var data = Mutate(e.Data.Span, random);
                long before = GC.GetAllocatedBytesForCurrentThread();
                var result = EventDataDecoder.Decode(e.UntrustedType, data);
                long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
                Assert.True(allocated < 1024 * 1024 + 64L * data.Length,
                    $"{name} event {e.Number} mutation {i}: {allocated} bytes allocated for {data.Length} bytes of data");
                if (i % RenderEvery == 0 || result is DecodeError)
                {
                    Assert.NotNull(result.ToJson().ToJsonString());
                    string line = result.ToString();
                    Assert.False(line.Any(char.IsControl), $"{name} event {e.Number} mutation {i}: control character in {line}");
                }
                decoded++;
                errors += result is DecodeError ? 1 : 0;
            }
        }
        Assert.True(decoded > 0);
        Assert.True(errors > 0, $"{name}: no mutation of {decoded} was malformed");
    }

    private static byte[] Mutate(ReadOnlySpan<byte> original, Random random)
    {
        var data = original.ToArray();
        switch (random.Next(6))
        {
            case 0 when data.Length > 0:
                data[random.Next(data.Length)] ^= (byte)random.Next(1, 256);
                return data;
            case 1:
                return data[..random.Next(data.Length + 1)];
            case 2 when data.Length >= 4:
                // A length or count field overwritten with a huge value.
                int at = random.Next(data.Length - 3);
                random.NextBytes(data.AsSpan(at, 4));
                data[at + 3] |= 0x80;
                return data;
            case 3 when data.Length >= 8:
                int at8 = random.Next(data.Length - 7);
                data.AsSpan(at8, 8).Fill(0xFF);
                return data;
            case 4:
                var extra = new byte[random.Next(1, 33)];
                random.NextBytes(extra);
                return [.. data, .. extra];
            default:
                for (int i = 0, n = random.Next(1, 9); i < n && data.Length > 0; i++)
                {
                    data[random.Next(data.Length)] = (byte)random.Next(256);
                }
                return data;
        }
    }

    /// <summary>FNV-1a of the log name and event number: stable across runs, unlike string.GetHashCode.</summary>
    private static int Seed(string name, int number)
    {
        uint hash = 2166136261;
        foreach (char c in name)
        {
            hash = (hash ^ c) * 16777619;
        }
        return (int)((hash ^ (uint)number) * 16777619);
    }
}

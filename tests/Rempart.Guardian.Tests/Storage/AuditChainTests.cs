using Rempart.Guardian.Storage;

namespace Rempart.Guardian.Tests.Storage;

/// <summary>The chain's canonical encoding and verification, without a database.</summary>
public sealed class AuditChainTests
{
    private static readonly DateTimeOffset T0 = DateTimeOffset.FromUnixTimeMilliseconds(1_767_225_600_000);

    [Fact]
    public void Canonical_encoding_is_length_prefixed_big_endian()
    {
        var encoded = AuditChain.Canonical(1, DateTimeOffset.FromUnixTimeMilliseconds(1000), "k", "sé", "{}");
        Assert.Equal(
            "0000000000000001" + "00000000000003E8" + "00000001" + "6B" + "00000003" + "73C3A9" + "00000002" + "7B7D",
            Convert.ToHexString(encoded));
    }

    [Fact]
    public void Field_boundaries_are_part_of_the_encoding()
    {
        Assert.NotEqual(
            AuditChain.ComputeHash(AuditChain.Genesis, 1, T0, "ab", "c", "{}"),
            AuditChain.ComputeHash(AuditChain.Genesis, 1, T0, "a", "bc", "{}"));
    }

    [Fact]
    public void A_lone_surrogate_is_refused_not_replaced()
    {
        Assert.ThrowsAny<ArgumentException>(() => AuditChain.Canonical(1, T0, "k", "\ud800", "{}"));
    }

    [Fact]
    public void An_empty_chain_verifies()
    {
        Assert.Equal((true, (long?)null), AuditChain.Verify([]));
    }

    public static TheoryData<string> TamperCases => new(Tampers.Keys);

    /// <summary>Each case rewrites a valid five-record chain and names the first seq that must be reported.</summary>
    private static readonly Dictionary<string, (Func<List<AuditRecord>, List<AuditRecord>> Tamper, long FirstBad)> Tampers = new()
    {
        ["data changed"] = (c => Replace(c, 2, c[2] with { DataJson = "{\"x\":2}" }), 3),
        ["data changed and its hash recomputed"] = (c => Replace(c, 2, Rehash(c[2] with { DataJson = "{\"x\":2}" })), 4),
        ["hash changed"] = (c => Replace(c, 2, c[2] with { Hash = new byte[32] }), 3),
        ["record deleted"] = (c => c.Where(r => r.Seq != 3).ToList(), 3),
        ["first record deleted"] = (c => c.Skip(1).ToList(), 1),
        ["records swapped"] = (c => [c[0], c[2], c[1], c[3], c[4]], 2),
        ["record duplicated"] = (c => [c[0], c[1], c[1], c[2], c[3], c[4]], 2),
        ["genesis not zero"] = (c => Replace(c, 0, Rehash(c[0] with { PrevHash = Enumerable.Repeat((byte)1, 32).ToArray() })), 1),
        ["short hash"] = (c => Replace(c, 4, c[4] with { Hash = c[4].Hash[..31] }), 5),
    };

    [Theory]
    [MemberData(nameof(TamperCases))]
    public void Tampering_is_found_at_the_first_bad_seq(string name)
    {
        var chain = Chain(5);
        Assert.Equal((true, (long?)null), AuditChain.Verify(chain));
        var (tamper, firstBad) = Tampers[name];
        Assert.Equal((false, (long?)firstBad), AuditChain.Verify(tamper(chain)));
    }

    private static List<AuditRecord> Chain(int n)
    {
        var records = new List<AuditRecord>();
        var prev = AuditChain.Genesis;
        for (var seq = 1L; seq <= n; seq++)
        {
            var at = T0.AddSeconds(seq);
            var hash = AuditChain.ComputeHash(prev, seq, at, "host.attested", $"h{seq}", "{}");
            records.Add(new AuditRecord(seq, at, "host.attested", $"h{seq}", "{}", prev, hash));
            prev = hash;
        }
        return records;
    }

    private static AuditRecord Rehash(AuditRecord r) =>
        r with { Hash = AuditChain.ComputeHash(r.PrevHash, r.Seq, r.At, r.Kind, r.Subject, r.DataJson) };

    private static List<AuditRecord> Replace(List<AuditRecord> chain, int index, AuditRecord record)
    {
        var copy = chain.ToList();
        copy[index] = record;
        return copy;
    }
}

using System.Buffers.Binary;
using Rempart.Host.Snapshots;
using Rempart.KeyProtection;
using static Rempart.Host.Tests.Snapshots.SnapshotTestStreams;

namespace Rempart.Host.Tests.Snapshots;

/// <summary>
/// Every way a sealed snapshot can be changed is refused, by verify, by restore (which then releases nothing)
/// and by the pull reader — the "why" of each is in docs/snapshot-format.md, "What is detected and how".
/// </summary>
public sealed class SnapshotTamperTests : IDisposable
{
    private const int Chunk = 64;
    private readonly VmMasterKey _vmk = NewVmk();
    private readonly SnapshotKey _key;

    public SnapshotTamperTests() => _key = Key(_vmk);

    public void Dispose()
    {
        _key.Dispose();
        _vmk.Dispose();
    }

    [Fact]
    public async Task Every_byte_flip_is_refused()
    {
        var sealedBytes = await Seal(Random(4 * Chunk + 44), _key, Chunk);
        Assert.InRange(sealedBytes.Length, 400, 600);
        var ids = new Dictionary<string, int>();
        for (int i = 0; i < sealedBytes.Length; i++)
        {
            foreach (byte bit in (byte[])[0x01, 0x80])
            {
                var bad = (byte[])sealedBytes.Clone();
                bad[i] ^= bit;
                var e = await Refused(bad, _key);
                ids[e.Id] = ids.GetValueOrDefault(e.Id) + 1;
            }
        }
        // Header fields: format (magic, version, sizes, id syntax) or wrong-vm / wrong-snapshot; salt and MAC:
        // tampered; record kinds and lengths: format, tampered (data ↔ final) or truncated (a longer final record).
        Assert.Subset(new HashSet<string> { SnapshotException.Format, SnapshotException.WrongVm, SnapshotException.WrongSnapshot, SnapshotException.Tampered, SnapshotException.Truncated }, ids.Keys.ToHashSet());
        Assert.Contains(SnapshotException.Tampered, ids.Keys);
        Assert.Contains(SnapshotException.Format, ids.Keys);
    }

    [Fact]
    public async Task Every_truncation_is_refused_as_truncated()
    {
        var sealedBytes = await Seal(Random(3 * Chunk + 10), _key, Chunk);
        for (int n = 0; n < sealedBytes.Length; n++)
        {
            var e = await Refused(sealedBytes[..n], _key);
            Assert.Equal(SnapshotException.Truncated, e.Id);
            Assert.True(e.Offset <= n, $"cut at {n}, reported at {e.Offset}");
        }
        // Cut exactly after a data record (a chunk boundary): the missing final record says so.
        var records = Records(sealedBytes);
        var atBoundary = await Refused(sealedBytes[..records[2].Offset], _key);
        Assert.Equal((SnapshotException.Truncated, 2L, (long)records[2].Offset), (atBoundary.Id, atBoundary.Chunk!.Value, atBoundary.Offset!.Value));
    }

    public static TheoryData<string, int> TrailingCases => new() { { "one zero byte", 1 }, { "a record's worth", Chunk + 21 }, { "a copy of the final record", -1 } };

    [Theory]
    [MemberData(nameof(TrailingCases))]
    public async Task Bytes_after_the_final_record_are_refused(string name, int extra)
    {
        var sealedBytes = await Seal(Random(2 * Chunk + 3), _key, Chunk);
        var final = Records(sealedBytes)[^1];
        byte[] tail = extra > 0 ? new byte[extra] : sealedBytes[final.Offset..];
        var e = await Refused([.. sealedBytes, .. tail], _key);
        Assert.Equal(SnapshotException.Trailing, e.Id);
        Assert.Equal(sealedBytes.Length, e.Offset);
        Assert.NotNull(name);
    }

    [Fact]
    public async Task Reordered_dropped_or_duplicated_chunks_are_refused()
    {
        var sealedBytes = await Seal(Random(5 * Chunk + 9), _key, Chunk);
        var r = Records(sealedBytes);
        byte[] Rec(int i) => sealedBytes[r[i].Offset..(r[i].Offset + r[i].Length)];
        byte[] Build(params int[] order) => [.. sealedBytes[..r[0].Offset], .. order.SelectMany(Rec)];

        var swapped = await Refused(Build(0, 2, 1, 3, 4, 5), _key);
        Assert.Equal((SnapshotException.Tampered, 1L, (long)r[1].Offset), (swapped.Id, swapped.Chunk!.Value, swapped.Offset!.Value));
        Assert.Equal(SnapshotException.Tampered, (await Refused(Build(0, 1, 2, 4, 5), _key)).Id);      // one dropped
        Assert.Equal(SnapshotException.Tampered, (await Refused(Build(0, 1, 1, 2, 3, 4, 5), _key)).Id); // one repeated
        Assert.Equal(SnapshotException.Tampered, (await Refused(Build(1, 2, 3, 4, 5), _key)).Id);       // first dropped
        Assert.Equal(SnapshotException.Truncated, (await Refused(Build(0, 1, 2, 3, 4), _key)).Id);      // final dropped
        Assert.Equal(SnapshotException.Tampered, (await Refused(Build(0, 1, 2, 3, 5), _key)).Id);       // final moved up
        // A data record relabelled final (kind 0 → 1 and the length made legal) does not authenticate either.
        var relabelled = Build(0, 1, 2);
        int last = r[0].Offset + 2 * r[0].Length;
        relabelled[last] = 1;
        BinaryPrimitives.WriteUInt32BigEndian(relabelled.AsSpan(last + 1), Chunk - 1);
        Assert.Equal(SnapshotException.Tampered, (await Refused(relabelled[..^1], _key)).Id);
    }

    public static TheoryData<string> SpliceSources => new() { "same snapshot, sealed again", "another snapshot of the same VM", "the same snapshot id of another VM" };

    [Theory]
    [MemberData(nameof(SpliceSources))]
    public async Task A_chunk_spliced_from_another_stream_is_refused(string source)
    {
        var plaintext = Random(4 * Chunk + 7);
        var sealedBytes = await Seal(plaintext, _key, Chunk);
        using var otherVmk = NewVmk();
        using var otherKey = source switch
        {
            "same snapshot, sealed again" => Key(_vmk),
            "another snapshot of the same VM" => Key(_vmk, snapshotId: "snap-2"),
            _ => Key(otherVmk),
        };
        var other = await Seal(plaintext, otherKey, Chunk);
        var r = Records(sealedBytes);
        var ro = Records(other);
        for (int i = 0; i < r.Count; i++)
        {
            // Same plaintext, same position, same length: only the stream it came from differs.
            var spliced = (byte[])sealedBytes.Clone();
            Assert.Equal(r[i].Length, ro[i].Length);
            other.AsSpan(ro[i].Offset, ro[i].Length).CopyTo(spliced.AsSpan(r[i].Offset));
            var e = await Refused(spliced, _key);
            Assert.Equal((SnapshotException.Tampered, (long)i), (e.Id, e.Chunk!.Value));
        }
        // The other stream's header with this stream's chunks, and the other way round.
        var h = r[0].Offset;
        var ho = ro[0].Offset;
        Assert.NotEqual(SnapshotException.Format, (await Refused([.. other[..ho], .. sealedBytes[h..]], _key, sameId: true)).Id);
        Assert.Equal(SnapshotException.Tampered, (await Refused([.. sealedBytes[..h], .. other[ho..]], _key)).Id);
    }

    [Fact]
    public async Task The_wrong_key_or_the_wrong_expected_ids_are_refused()
    {
        var sealedBytes = await Seal(Random(100), _key, Chunk);
        using var otherVmk = NewVmk();
        using var wrongVmk = Key(otherVmk);
        var e = await Refused(sealedBytes, wrongVmk);
        Assert.Equal((SnapshotException.Tampered, 0L), (e.Id, e.Offset!.Value));
        using var otherVm = Key(_vmk, vmId: "vm-test-2");
        Assert.Equal(SnapshotException.WrongVm, (await Refused(sealedBytes, otherVm)).Id);
        using var otherSnapshot = Key(_vmk, snapshotId: "snap-2");
        Assert.Equal(SnapshotException.WrongSnapshot, (await Refused(sealedBytes, otherSnapshot)).Id);
    }

    /// <summary>Header mutations by field. Offsets for VM id "vm-test-1" (n = 9) and snapshot id "snap-1" (m = 6).</summary>
    public static TheoryData<string, string> HeaderMutations => new()
    {
        { "magic", SnapshotException.Format },
        { "version 2", SnapshotException.Format },
        { "version 0", SnapshotException.Format },
        { "chunk size 0", SnapshotException.Format },
        { "chunk size 63", SnapshotException.Format },
        { "chunk size 16 MiB + 1", SnapshotException.Format },
        { "chunk size 128 (legal, not the sealed one)", SnapshotException.Tampered },
        { "VM id length 0", SnapshotException.Format },
        { "VM id length 65", SnapshotException.Format },
        { "VM id with a slash", SnapshotException.Format },
        { "VM id of another VM", SnapshotException.WrongVm },
        { "snapshot id length 0", SnapshotException.Format },
        { "snapshot id of another snapshot", SnapshotException.WrongSnapshot },
        { "salt", SnapshotException.Tampered },
        { "MAC", SnapshotException.Tampered },
        { "MAC zeroed", SnapshotException.Tampered },
    };

    [Theory]
    [MemberData(nameof(HeaderMutations))]
    public async Task Header_field_mutations_are_refused(string mutation, string id)
    {
        var sealedBytes = await Seal(Random(3 * Chunk), _key, Chunk);
        const int n = 9, m = 6;
        Assert.Equal(n, sealedBytes[13]);
        Assert.Equal(m, sealedBytes[14 + n]);
        var bad = (byte[])sealedBytes.Clone();
        var s = bad.AsSpan();
        switch (mutation)
        {
            case "magic": s[3] = (byte)'X'; break;
            case "version 2": s[8] = 2; break;
            case "version 0": s[8] = 0; break;
            case "chunk size 0": BinaryPrimitives.WriteUInt32BigEndian(s[9..], 0); break;
            case "chunk size 63": BinaryPrimitives.WriteUInt32BigEndian(s[9..], 63); break;
            case "chunk size 16 MiB + 1": BinaryPrimitives.WriteUInt32BigEndian(s[9..], (16 << 20) + 1); break;
            case "chunk size 128 (legal, not the sealed one)": BinaryPrimitives.WriteUInt32BigEndian(s[9..], 128); break;
            case "VM id length 0": s[13] = 0; break;
            case "VM id length 65": s[13] = 65; break;
            case "VM id with a slash": s[16] = (byte)'/'; break;
            case "VM id of another VM": s[14 + n - 1] = (byte)'2'; break;
            case "snapshot id length 0": s[14 + n] = 0; break;
            case "snapshot id of another snapshot": s[15 + n + m - 1] = (byte)'2'; break;
            case "salt": s[15 + n + m + 5] ^= 0x10; break;
            case "MAC": s[47 + n + m + 31] ^= 0x01; break;
            case "MAC zeroed": s.Slice(47 + n + m, 32).Clear(); break;
            default: throw new ArgumentException(mutation);
        }
        Assert.Equal(id, (await Refused(bad, _key)).Id);
        if (id is SnapshotException.WrongVm or SnapshotException.WrongSnapshot)
        {
            // Relabelled for the key of the VM or snapshot it now names: that key does not authenticate it.
            using var relabelled = id == SnapshotException.WrongVm ? Key(_vmk, vmId: "vm-test-2") : Key(_vmk, snapshotId: "snap-2");
            Assert.Equal(SnapshotException.Tampered, (await Refused(bad, relabelled)).Id);
        }
    }

    [Fact]
    public async Task The_pull_reader_releases_only_the_chunks_before_a_fault_and_stays_refused_after_it()
    {
        var plaintext = Random(5 * Chunk + 1);
        var sealedBytes = await Seal(plaintext, _key, Chunk);
        var bad = (byte[])sealedBytes.Clone();
        bad[Records(sealedBytes)[3].Offset + 30] ^= 0x04;
        using var reader = new SnapshotReader(new MemoryStream(bad), _key);
        var got = new byte[3 * Chunk];
        reader.ReadExactly(got);
        Assert.Equal(plaintext[..(3 * Chunk)], got);
        var e = Assert.Throws<SnapshotException>(() => reader.ReadByte());
        Assert.Equal((SnapshotException.Tampered, 3L), (e.Id, e.Chunk!.Value));
        Assert.Equal(SnapshotException.Tampered, Assert.Throws<SnapshotException>(() => reader.ReadByte()).Id);
    }

    [Fact]
    public async Task Random_mutations_are_refused()
    {
        var sealedBytes = await Seal(Random(6 * Chunk + 30), _key, Chunk);
        var rng = new Random(20261127);
        for (int round = 0; round < 400; round++)
        {
            var bad = sealedBytes.ToList();
            for (int k = rng.Next(1, 4); k > 0; k--)
            {
                int at = rng.Next(bad.Count);
                switch (rng.Next(5))
                {
                    case 0: bad[at] ^= (byte)(1 << rng.Next(8)); break;
                    case 1: bad[at] = (byte)rng.Next(256); break;
                    case 2: bad.RemoveRange(at, Math.Min(rng.Next(1, 40), bad.Count - at)); break;
                    case 3: bad.InsertRange(at, Enumerable.Range(0, rng.Next(1, 40)).Select(_ => (byte)rng.Next(256))); break;
                    default:
                        int from = rng.Next(bad.Count);
                        bad.InsertRange(at, bad.Skip(from).Take(rng.Next(1, 90)).ToArray());
                        break;
                }
            }
            if (bad.SequenceEqual(sealedBytes))
            {
                continue;
            }
            await Refused([.. bad], _key, sameId: false);
        }
    }
}

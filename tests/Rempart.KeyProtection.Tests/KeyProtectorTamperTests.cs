using System.Text;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Rempart.KeyProtection.Tests;

/// <summary>
/// Every bit of a serialized key protector flipped, one at a time: the result is a format error or a
/// failed check with a stable id — never success with anything changed, never another exception type.
/// </summary>
public sealed class KeyProtectorTamperTests(ITestOutputHelper output) : IDisposable
{
    private readonly SoftwareGuardianKeys _guardian = new("guardian-1");
    private readonly SoftwareGuardianKeys _other = new("guardian-2");
    private readonly OwnerKey _owner = OwnerKey.Generate();

    public void Dispose()
    {
        _guardian.Dispose();
        _other.Dispose();
        _owner.Dispose();
    }

    /// <summary>
    /// Z memoized by (kid, ephemeral key): a P-384 ECDH costs milliseconds here, and most mutations leave
    /// the ephemeral keys alone. Everything after Z (KDF, AEAD, MAC) runs for every mutation.
    /// </summary>
    private sealed class MemoizedAgreement(Func<string, byte[], byte[]> agree)
    {
        private readonly Dictionary<string, byte[]> _z = [];

        public byte[] Agree(string kid, ReadOnlySpan<byte> epk)
        {
            var key = kid + ":" + Convert.ToHexString(epk);
            if (!_z.TryGetValue(key, out var z))
            {
                _z[key] = z = agree(kid, epk.ToArray());
            }
            return (byte[])z.Clone(); // the unwrap wipes what it is given
        }
    }

    private sealed class MemoizedGuardian(IGuardianKeyOperations inner) : IGuardianKeyOperations
    {
        private readonly MemoizedAgreement _memo = new((kid, epk) => inner.DeriveSharedSecret(kid, epk));

        public byte[] DeriveSharedSecret(string kid, ReadOnlySpan<byte> peer) => _memo.Agree(kid, peer);

        public byte[] SignEs256(ReadOnlySpan<byte> data) => inner.SignEs256(data);
    }

    private MemoizedGuardian? _memoGuardian;
    private MemoizedAgreement? _memoOwner;

    private enum Outcome
    {
        FormatError,
        CheckFailed,
        Unchanged,
    }

    [Fact]
    public void Every_single_bit_flip_is_a_format_error_or_a_failed_check()
    {
        var (kp, vmk) = KeyProtector.Create("vm-1", KeyProtectorTests.GroupA, _owner.PublicKey, [_guardian.Metadata(), _other.Metadata()]);
        vmk.Dispose();
        var original = kp.ToJsonBytes();
        var counts = new Dictionary<string, int>();
        for (int i = 0; i < original.Length; i++)
        {
            for (int bit = 0; bit < 8; bit++)
            {
                var m = (byte[])original.Clone();
                m[i] ^= (byte)(1 << bit);
                var (outcome, id) = Try(m, kp);
                Assert.True(outcome != Outcome.Unchanged, $"flip of bit {bit} at offset {i} ('{(char)original[i]}') was accepted");
                counts[id] = counts.GetValueOrDefault(id) + 1;
            }
        }
        output.WriteLine($"{original.Length} bytes, {original.Length * 8} flips: " + string.Join(", ", counts.OrderByDescending(c => c.Value).Select(c => $"{c.Key} {c.Value}")));
        Assert.True(counts.GetValueOrDefault("kp.wrap.tag") > 0 && counts.GetValueOrDefault("kp.integrity") > 0 && counts.GetValueOrDefault("kp.format") > 0);
    }

    [Fact]
    public void Every_byte_replaced_by_a_json_significant_character_is_caught()
    {
        var (kp, vmk) = KeyProtector.Create("vm-1", KeyProtectorTests.GroupA, _owner.PublicKey, [_guardian.Metadata()]);
        vmk.Dispose();
        var original = kp.ToJsonBytes();
        foreach (var c in "\"\\,:{}[] 0A_-z".Select(c => (byte)c))
        {
            for (int i = 0; i < original.Length; i++)
            {
                if (original[i] == c)
                {
                    continue;
                }
                var m = (byte[])original.Clone();
                m[i] = c;
                var (outcome, _) = Try(m, kp);
                Assert.True(outcome != Outcome.Unchanged, $"'{(char)c}' at offset {i} was accepted");
            }
        }
        // Truncations and deletions of one byte.
        for (int i = 0; i < original.Length; i++)
        {
            Assert.NotEqual(Outcome.Unchanged, Try(original[..i], kp).Outcome);
            Assert.NotEqual(Outcome.Unchanged, Try([.. original[..i], .. original[(i + 1)..]], kp).Outcome);
        }
    }

    [Theory]
    [InlineData("group-b")]
    [InlineData("group-a\",\"group-b")]
    [InlineData("*")]
    public void A_kp_for_group_a_keeps_group_a_whatever_is_written_in_its_policy(string newGroups)
    {
        var (kp, vmk) = KeyProtector.Create("vm-1", KeyProtectorTests.GroupA, _owner.PublicKey, [_guardian.Metadata()]);
        vmk.Dispose();
        var json = kp.ToJson().Replace("\"hostGroups\":[\"group-a\"]", $"\"hostGroups\":[\"{newGroups}\"]", StringComparison.Ordinal);
        Assert.NotEqual(kp.ToJson(), json);
        KeyProtector changed;
        try
        {
            changed = KeyProtector.Parse(json);
        }
        catch (KeyProtectorFormatException)
        {
            return;
        }
        var e = Assert.Throws<KeyProtectorException>(() => changed.UnwrapWithGuardian(_guardian, _guardian.Keys));
        Assert.Equal("kp.wrap.tag", e.Id);
        e = Assert.Throws<KeyProtectorException>(() => changed.RecoverWithOwner(_owner));
        Assert.Equal("kp.wrap.tag", e.Id);
    }

    [Fact]
    public void Shielding_downgrade_and_vm_id_change_are_caught()
    {
        var (kp, vmk) = KeyProtector.Create("vm-1", KeyProtectorTests.GroupA, _owner.PublicKey, [_guardian.Metadata()]);
        vmk.Dispose();
        foreach (var json in new[]
        {
            kp.ToJson().Replace("\"shielded\"", "\"encryption-supported\"", StringComparison.Ordinal),
            kp.ToJson().Replace("\"vm-1\"", "\"vm-2\"", StringComparison.Ordinal),
        })
        {
            var e = Assert.Throws<KeyProtectorException>(() => KeyProtector.Parse(json).UnwrapWithGuardian(_guardian, _guardian.Keys));
            Assert.Equal("kp.wrap.tag", e.Id);
        }
    }

    /// <summary>Parses and opens a mutated KP both ways; anything that is not one of our two exception types fails the test.</summary>
    private (Outcome Outcome, string Id) Try(byte[] mutated, KeyProtector original)
    {
        KeyProtector kp;
        try
        {
            kp = KeyProtector.Parse(mutated);
        }
        catch (KeyProtectorFormatException e)
        {
            Assert.False(string.IsNullOrEmpty(e.Field));
            return (Outcome.FormatError, e.Id);
        }
        string? failure = null;
        _memoGuardian ??= new MemoizedGuardian(_guardian);
        _memoOwner ??= new MemoizedAgreement((_, epk) => _owner.Agree(epk));
        Func<VmMasterKey> owner = kp.Owner.Kid == _owner.PublicKey.Kid
            ? () => kp.OpenOwnerWrap(epk => _memoOwner.Agree("owner", epk))
            : () => kp.RecoverWithOwner(_owner); // the kid check is the public path's
        foreach (var open in new Func<VmMasterKey>[] { () => kp.UnwrapWithGuardian(_memoGuardian, _guardian.Keys), owner })
        {
            try
            {
                using var vmk = open();
                // Success is allowed only when nothing that matters changed (e.g. JSON whitespace), and then
                // the policy is by construction the original one.
                Assert.True(kp.MacInput().AsSpan().SequenceEqual(original.MacInput()), "a changed key protector opened: " + Encoding.UTF8.GetString(mutated));
                Assert.Equal(original.Policy.HostGroups, kp.Policy.HostGroups);
                Assert.Equal(original.Policy.Shielding, kp.Policy.Shielding);
            }
            catch (KeyProtectorException e) when (e is not KeyProtectorFormatException)
            {
                failure ??= e.Id;
            }
        }
        return failure is null ? (Outcome.Unchanged, "unchanged") : (Outcome.CheckFailed, failure);
    }

    [Fact]
    public void Whitespace_between_tokens_is_the_only_change_that_opens()
    {
        var (kp, vmk) = KeyProtector.Create("vm-1", KeyProtectorTests.GroupA, _owner.PublicKey, [_guardian.Metadata()]);
        vmk.Dispose();
        var pretty = JsonNode.Parse(kp.ToJson())!.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
        using var key = KeyProtector.Parse(pretty).UnwrapWithGuardian(_guardian, _guardian.Keys);
        Assert.Equal(kp.ToJson(), KeyProtector.Parse(pretty).ToJson());
    }
}

using System.Security.Cryptography;
using System.Text;
using Rempart.Attestation.Protocol;
using Rempart.Host.Attestation;
using Rempart.Host.Keys;
using Rempart.Host.Migration;
using Rempart.KeyProtection;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Host.Tests.Migration;

/// <summary>
/// The channel's key schedule (docs/migration.md "Channel"): checked against RFC 5869 written out
/// here with HMAC-SHA256 alone; every input changes the keys; a share wrapped to a binding key is
/// opened by that TPM (libtpms decides) under that label only, and by no other TPM.
/// </summary>
public sealed class MigrationKeysTests
{
    private const string Mid = "0123456789abcdef0123456789abcdef";
    private static readonly MigrationPeer Src = new("host-s", "g", "000b" + new string('1', 64), "");
    private static readonly MigrationPeer Dst = new("host-d", "g", "000b" + new string('2', 64), "");

    /// <summary>RFC 5869 by hand: PRK = HMAC(salt, IKM); T(1) = HMAC(PRK, info ‖ 0x01) (32 bytes suffice).</summary>
    private static byte[] Rfc5869(byte[] salt, byte[] ikm, string info) =>
        HMACSHA256.HashData(HMACSHA256.HashData(salt, ikm), (byte[])[.. Encoding.ASCII.GetBytes(info), 1]);

    [Fact]
    public void The_schedule_is_HKDF_over_both_shares_and_the_VM_key_salted_with_the_transcript()
    {
        var ks = RandomNumberGenerator.GetBytes(32);
        var kd = RandomNumberGenerator.GetBytes(32);
        using var vmk = VmMasterKey.FromBytes(RandomNumberGenerator.GetBytes(32));
        var transcript = MigrationKeys.Transcript(Mid, "vm-1", Src, Dst, [1, 2, 3], [4, 5], [6, 7]);
        using var keys = new MigrationKeys.Schedule(ks, kd, vmk, Mid, transcript);
        // Kvm per DESIGN.md §3.5 / docs/key-protector.md: HKDF(VMK, salt empty, "rempart/vm-key/v1/migration/<id>").
        var kvm = Rfc5869(new byte[32], vmk.Bytes.ToArray(), "rempart/vm-key/v1/migration/" + Mid);
        byte[] ikm = [.. ks, .. kd, .. kvm];
        Assert.Equal(Rfc5869(transcript, ikm, "rempart/migration/v1/source-to-destination"), keys.SourceToDestination);
        Assert.Equal(Rfc5869(transcript, ikm, "rempart/migration/v1/destination-to-source"), keys.DestinationToSource);
        var confirm = Rfc5869(transcript, ikm, "rempart/migration/v1/confirm");
        Assert.Equal(HMACSHA256.HashData(confirm, (byte[])[.. "source\0"u8, .. transcript]), keys.Confirmation("source"));
        Assert.NotEqual(keys.SourceToDestination, keys.DestinationToSource);
    }

    [Fact]
    public void The_destination_proof_is_HMAC_under_HKDF_of_Ks_salted_with_the_handshake_binding()
    {
        var ks = RandomNumberGenerator.GetBytes(32);
        var binding = RandomNumberGenerator.GetBytes(32);
        var key = Rfc5869(binding, ks, "rempart/migration/v3/destination-proof");
        var expected = HMACSHA256.HashData(key, Encoding.ASCII.GetBytes("destination\0rempart/migration/v1/" + Mid + "/s"));
        Assert.Equal(expected, MigrationKeys.DestinationProof(ks, binding, Mid));
        MigrationKeys.CheckDestinationProof(ks, binding, Mid, expected);
    }

    [Fact]
    public void A_proof_made_on_another_connection_with_another_share_or_for_another_migration_is_refused()
    {
        var ks = RandomNumberGenerator.GetBytes(32);
        var binding = RandomNumberGenerator.GetBytes(32);
        var other = "fedcba9876543210fedcba9876543210";
        var flipped = (byte[])ks.Clone();
        flipped[^1] ^= 1;
        var wrongBinding = (byte[])binding.Clone();
        wrongBinding[0] ^= 0x80;
        // A middle that runs the key exchange with each side holds two bindings: the destination's proof is made with its own.
        foreach (var proof in new[] { MigrationKeys.DestinationProof(ks, wrongBinding, Mid), MigrationKeys.DestinationProof(flipped, binding, Mid),
            MigrationKeys.DestinationProof(ks, binding, other), new byte[32], [], null })
        {
            var e = Assert.Throws<MigrationChannelException>(() => MigrationKeys.CheckDestinationProof(ks, binding, Mid, proof));
            Assert.Equal("migration.channel.proof", e.Id);
        }
        Assert.Equal("migration.share", Assert.Throws<MigrationChannelException>(() => MigrationKeys.DestinationProof(ks[..31], binding, Mid)).Id);
        Assert.Equal("migration.id", Assert.Throws<MigrationChannelException>(() => MigrationKeys.DestinationProof(ks, binding, "not-an-id")).Id);
    }

    [Fact]
    public void The_transcript_is_SHA256_of_length_prefixed_fields()
    {
        static byte[] F(byte[] b) => [(byte)(b.Length >> 24), (byte)(b.Length >> 16), (byte)(b.Length >> 8), (byte)b.Length, .. b];
        byte[] expected = SHA256.HashData([.. new[] { "rempart-migration/3", Mid, "vm-1", Src.HostId, Src.BindingKey, Dst.HostId, Dst.BindingKey }
            .SelectMany(s => F(Encoding.UTF8.GetBytes(s))), .. F([1, 2, 3]), .. F([4, 5]), .. F([6, 7])]);
        Assert.Equal(expected, MigrationKeys.Transcript(Mid, "vm-1", Src, Dst, [1, 2, 3], [4, 5], [6, 7]));
        // Moving a byte from one field to the next changes it (the length prefixes separate fields).
        Assert.NotEqual(expected, MigrationKeys.Transcript(Mid, "vm-1", Src, Dst, [1, 2], [3, 4, 5], [6, 7]));
        // The handshake's binding is part of it: a handshake relayed through a third key exchange gives another transcript.
        Assert.NotEqual(expected, MigrationKeys.Transcript(Mid, "vm-1", Src, Dst, [1, 2, 3], [4, 5], [6, 8]));
    }

    [Fact]
    public void Every_input_changes_the_keys_and_a_different_transcript_fails_confirmation()
    {
        var ks = RandomNumberGenerator.GetBytes(32);
        var kd = RandomNumberGenerator.GetBytes(32);
        using var vmk = VmMasterKey.FromBytes(RandomNumberGenerator.GetBytes(32));
        using var other = VmMasterKey.FromBytes(RandomNumberGenerator.GetBytes(32));
        var t = MigrationKeys.Transcript(Mid, "vm-1", Src, Dst, [1], [2], [9]);
        using var baseKeys = new MigrationKeys.Schedule(ks, kd, vmk, Mid, t);
        var flipped = (byte[])ks.Clone();
        flipped[0] ^= 1;
        using var a = new MigrationKeys.Schedule(flipped, kd, vmk, Mid, t);
        using var b = new MigrationKeys.Schedule(ks, flipped, vmk, Mid, t);
        using var c = new MigrationKeys.Schedule(ks, kd, other, Mid, t);
        using var d = new MigrationKeys.Schedule(ks, kd, vmk, Mid, MigrationKeys.Transcript(Mid, "vm-1", Src, Dst, [1], [3], [9]));
        using var e = new MigrationKeys.Schedule(ks, kd, vmk, "f" + Mid[1..], t);
        foreach (var s in new[] { a, b, c, d, e })
        {
            Assert.NotEqual(baseKeys.SourceToDestination, s.SourceToDestination);
            Assert.Equal("migration.channel.confirm",
                Assert.Throws<MigrationChannelException>(() => baseKeys.CheckConfirmation("destination", s.Confirmation("destination"))).Id);
        }
        baseKeys.CheckConfirmation("destination", baseKeys.Confirmation("destination"));
        Assert.Throws<MigrationChannelException>(() => baseKeys.CheckConfirmation("source", baseKeys.Confirmation("destination")));
        Assert.Throws<MigrationChannelException>(() => baseKeys.CheckConfirmation("source", null));
    }

    [Fact]
    public void Labels_fit_a_TPM2B_DATA_and_ids_are_checked()
    {
        Assert.True(MigrationKeys.DecryptLabel(Mid, 's').Length <= 64);
        Assert.Equal(0, MigrationKeys.DecryptLabel(Mid, 'd')[^1]);
        Assert.Equal("migration.id", Assert.Throws<MigrationChannelException>(() => MigrationKeys.Label("ABC", 's')).Id);
        Assert.Equal("migration.id", Assert.Throws<MigrationChannelException>(() => MigrationKeys.Label(Mid.ToUpperInvariant(), 's')).Id);
        Assert.Equal("migration.id", Assert.Throws<MigrationChannelException>(() => MigrationKeys.Label(Mid, 'x')).Id);
    }

    [Fact]
    public void A_share_wrapped_to_a_binding_key_opens_only_in_that_TPM_under_its_own_label()
    {
        using var a = new Swtpm("sha256");
        using var b = new Swtpm("sha256");
        CollectedEvidence Collect(Swtpm t)
        {
            using var c = t.Client();
            return new EvidenceCollector(c).Collect("h", RandomNumberGenerator.GetBytes(32), []);
        }
        var ev = Collect(a);
        var share = RandomNumberGenerator.GetBytes(32);
        var peer = new MigrationPeer("h", "g", Convert.ToHexStringLower(ev.BindingKeyPublic.Name()),
            System.Buffers.Text.Base64Url.EncodeToString(ev.BindingKeyPublic.ToSizedBytes()));
        var wrapped = MigrationKeys.WrapShare(MigrationKeys.PeerBindingKey(peer), share, Mid, 's');
        byte[] Decrypt(Swtpm t, char from)
        {
            using var c = t.Client();
            return new ReleaseUnwrapper(c).DecryptShare(ev.BindingKeyPrivate, ev.BindingKeyPublic, ev.BindingPcrs, wrapped, MigrationKeys.DecryptLabel(Mid, from));
        }
        Assert.Equal(share, Decrypt(a, 's'));
        Assert.Equal("release.unwrap.decrypt", Assert.Throws<ReleaseUnwrapException>(() => Decrypt(a, 'd')).Id);
        Assert.Equal("release.unwrap.load", Assert.Throws<ReleaseUnwrapException>(() => Decrypt(b, 's')).Id);
        // A record whose Name does not match its public area is refused before anything is wrapped.
        Assert.Equal("migration.binding-key", Assert.Throws<MigrationChannelException>(() => MigrationKeys.PeerBindingKey(peer with { BindingKey = "000b" + new string('0', 64) })).Id);
    }
}

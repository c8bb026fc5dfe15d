namespace Rempart.KeyProtection.Tests;

/// <summary>Guardian key rotation: old key protectors keep working until their key is retired; rewrap moves them to the new key.</summary>
public sealed class RotationTests : IDisposable
{
    private readonly SoftwareGuardianKeys _guardian = new("guardian-1");
    private readonly OwnerKey _owner = OwnerKey.Generate();

    public void Dispose()
    {
        _guardian.Dispose();
        _owner.Dispose();
    }

    /// <summary>Records which key the unwrap asked the provider for.</summary>
    private sealed class Spy(IGuardianKeyOperations inner) : IGuardianKeyOperations
    {
        public List<string> Kids { get; } = [];

        public byte[] DeriveSharedSecret(string kid, ReadOnlySpan<byte> peer)
        {
            Kids.Add(kid);
            return inner.DeriveSharedSecret(kid, peer);
        }

        public byte[] SignEs256(ReadOnlySpan<byte> data) => inner.SignEs256(data);
    }

    [Fact]
    public void Rotation_keeps_old_kps_working_rewrap_moves_them_and_retirement_ends_the_old_key()
    {
        var oldKey = _guardian.Active;
        var (kp, vmk) = KeyProtector.Create("vm-1", KeyProtectorTests.GroupA, _owner.PublicKey, [_guardian.Metadata()]);
        using (vmk)
        {
            var newKey = _guardian.Rotate();
            Assert.Equal(GuardianKeyStatus.Retiring, _guardian.Keys.Single(k => k.Kid == oldKey.Kid).Status);

            // The old KP still opens with the retiring key.
            using (var v = kp.UnwrapWithGuardian(_guardian, _guardian.Keys))
            {
                Assert.True(vmk.Bytes.SequenceEqual(v.Bytes));
            }

            // New KPs use the active key only.
            var (fresh, freshVmk) = KeyProtector.Create("vm-2", KeyProtectorTests.GroupA, _owner.PublicKey, [_guardian.Metadata()]);
            freshVmk.Dispose();
            Assert.Equal([newKey.Kid], fresh.Guardians.Select(g => g.Kid));

            // The Guardian re-wraps at release: same kpId, both keys, MAC re-made; everyone still opens it.
            KeyProtector rewrapped;
            using (var v = kp.UnwrapWithGuardian(_guardian, _guardian.Keys))
            {
                rewrapped = KeyProtector.Parse(kp.Rewrap(v, new GuardianRecipient("guardian-1", _guardian.Active)).ToJsonBytes());
            }
            Assert.Equal(kp.KpId, rewrapped.KpId);
            Assert.Equal([oldKey.Kid, newKey.Kid], rewrapped.Guardians.Select(g => g.Kid));
            var spy = new Spy(_guardian);
            using (var v = rewrapped.UnwrapWithGuardian(spy, _guardian.Keys))
            {
                Assert.True(vmk.Bytes.SequenceEqual(v.Bytes));
            }
            Assert.Equal([newKey.Kid], spy.Kids); // active key preferred
            using (var v = rewrapped.RecoverWithOwner(_owner))
            {
                Assert.True(vmk.Bytes.SequenceEqual(v.Bytes));
            }

            // Retire the old key: the KP that was not re-wrapped is refused with a distinct id, the re-wrapped one opens.
            _guardian.Retire(oldKey.Kid);
            var e = Assert.Throws<KeyProtectorException>(() => kp.UnwrapWithGuardian(_guardian, _guardian.Keys));
            Assert.Equal("kp.guardian-key.retired", e.Id);
            using (var v = rewrapped.UnwrapWithGuardian(_guardian, _guardian.Keys))
            {
                Assert.True(vmk.Bytes.SequenceEqual(v.Bytes));
            }

            // Dropping the retired wrap.
            var pruned = rewrapped.Rewrap(vmk, new GuardianRecipient("guardian-1", _guardian.Active), [oldKey.Kid]);
            Assert.Equal([newKey.Kid], pruned.Guardians.Select(g => g.Kid));
            using (var v = KeyProtector.Parse(pruned.ToJsonBytes()).UnwrapWithGuardian(_guardian, _guardian.Keys))
            {
                Assert.True(vmk.Bytes.SequenceEqual(v.Bytes));
            }

            // The retired key is never used for new key protectors or rewraps.
            var retired = _guardian.Keys.Single(k => k.Kid == oldKey.Kid);
            Assert.Throws<ArgumentException>(() => rewrapped.Rewrap(vmk, new GuardianRecipient("guardian-1", retired)));
            Assert.DoesNotContain(_guardian.Metadata().Recipient.Key.Kid, new[] { oldKey.Kid });
        }
    }

    [Fact]
    public void Rewrap_needs_this_kps_vmk_and_keeps_one_guardian_wrap()
    {
        var (kp, vmk) = KeyProtector.Create("vm-1", KeyProtectorTests.GroupA, _owner.PublicKey, [_guardian.Metadata()]);
        var (_, otherVmk) = KeyProtector.Create("vm-1", KeyProtectorTests.GroupA, _owner.PublicKey, [_guardian.Metadata()]);
        using (vmk)
        using (otherVmk)
        {
            _guardian.Rotate();
            var e = Assert.Throws<KeyProtectorException>(() => kp.Rewrap(otherVmk, new GuardianRecipient("guardian-1", _guardian.Active)));
            Assert.Equal("kp.integrity", e.Id);

            // Re-wrapping for a key already present changes nothing.
            var once = kp.Rewrap(vmk, new GuardianRecipient("guardian-1", _guardian.Active));
            var twice = once.Rewrap(vmk, new GuardianRecipient("guardian-1", _guardian.Active));
            Assert.Equal(once.ToJson(), twice.ToJson());
        }
    }
}

using System.Security.Cryptography;
using Rempart.KeyProtection;

namespace Rempart.Host.Tests.Vm;

/// <summary>A key protector and its VMK for a test VM (an owner and one Guardian key, made here).</summary>
internal static class VmTestKeys
{
    public static (byte[] KpJson, VmMasterKey Vmk) New(string vmId = "vm-test-1", ShieldingLevel shielding = ShieldingLevel.Shielded)
    {
        using var owner = OwnerKey.Generate();
        using var guardian = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        var spki = guardian.ExportSubjectPublicKeyInfo();
        var key = new GuardianKeyInfo(KeyIds.Of(spki), spki, GuardianKeyStatus.Active, DateTimeOffset.UtcNow);
        var (kp, vmk) = KeyProtector.Create(vmId, new ReleasePolicy(shielding, ["group-a"]), owner.PublicKey, [new GuardianRecipient("guardian-1", key)]);
        return (kp.ToJsonBytes(), vmk);
    }

    public static VmMasterKey Random() => VmMasterKey.FromBytes(RandomNumberGenerator.GetBytes(32));

    /// <summary>Whether <paramref name="needle"/> occurs anywhere in <paramref name="haystack"/>.</summary>
    public static bool Contains(ReadOnlySpan<byte> haystack, ReadOnlySpan<byte> needle) => haystack.IndexOf(needle) >= 0;

    /// <summary>Every file under <paramref name="dir"/>, read whole.</summary>
    public static IEnumerable<(string Path, byte[] Bytes)> Files(string dir) =>
        Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories).Select(f => (f, File.ReadAllBytes(f)));
}

using System.Security.Cryptography;
using System.Text;
using Rempart.Attestation.Protocol;
using Rempart.Host.Attestation;
using Rempart.Host.Keys;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Host.Tests.Keys;

/// <summary>
/// A released key is bound to one TPM, its attested PCRs and its release id: recovered by
/// TPM2_RSA_Decrypt on the certified binding key (libtpms decides, not our code), refused by
/// another TPM, after one PCR_Extend, under another release id, or when damaged. OpenSSL's
/// OAEP with the same label produces answers the TPM accepts: the scheme is the standard one.
/// </summary>
public sealed class ReleaseUnwrapTests : IDisposable
{
    private readonly Swtpm _a = new("sha1,sha256");
    private readonly Swtpm _b = new("sha1,sha256");

    public void Dispose()
    {
        _a.Dispose();
        _b.Dispose();
    }

    private static CollectedEvidence Collect(Swtpm tpm)
    {
        using var c = tpm.Client();
        return new EvidenceCollector(c).Collect("host-1", RandomNumberGenerator.GetBytes(32), []);
    }

    private static ReleaseResponse Release(CollectedEvidence ev, byte[] wrapped, string releaseId) =>
        new(releaseId, "vm-1", "kp-1", "host-1", "shielded", Convert.ToHexStringLower(ev.BindingKeyPublic.Name()),
            ReleaseWrap.Scheme, Convert.ToBase64String(wrapped), 1);

    private static string Unwrap(Swtpm tpm, CollectedEvidence ev, ReleaseResponse release)
    {
        using var c = tpm.Client();
        using var vmk = new ReleaseUnwrapper(c).Unwrap(ev.BindingKeyPrivate, ev.BindingKeyPublic, ev.BindingPcrs, release);
        return Convert.ToHexStringLower(vmk.Bytes);
    }

    [Fact]
    public void The_key_comes_back_only_in_the_same_TPM_state_and_under_the_same_release_id()
    {
        var ev = Collect(_a);
        var key = RandomNumberGenerator.GetBytes(32);
        var release = Release(ev, ReleaseWrap.Seal(ev.BindingKeyPublic, key, "r1"), "r1");

        Assert.Equal(Convert.ToHexStringLower(key), Unwrap(_a, ev, release));

        var otherId = Assert.Throws<ReleaseUnwrapException>(() => Unwrap(_a, ev, release with { ReleaseId = "r2" }));
        Assert.Equal("release.unwrap.decrypt", otherId.Id);

        var wrapped = Convert.FromBase64String(release.WrappedKey);
        wrapped[100] ^= 1;
        var damaged = Assert.Throws<ReleaseUnwrapException>(() => Unwrap(_a, ev, release with { WrappedKey = Convert.ToBase64String(wrapped) }));
        Assert.Equal("release.unwrap.decrypt", damaged.Id);

        var otherTpm = Assert.Throws<ReleaseUnwrapException>(() => Unwrap(_b, ev, release));
        Assert.Equal("release.unwrap.load", otherTpm.Id);

        using (var c = _a.Client())
        {
            c.PcrExtend(7, new TpmlDigestValues([new TpmtHa(TpmAlgId.Sha1, new byte[20]), new TpmtHa(TpmAlgId.Sha256, new byte[32])]));
        }
        var extended = Assert.Throws<ReleaseUnwrapException>(() => Unwrap(_a, ev, release));
        Assert.Equal("release.unwrap.policy", extended.Id);
    }

    [Fact]
    public void An_OpenSSL_OAEP_encryption_with_the_release_label_is_recovered_by_the_TPM()
    {
        var ev = Collect(_a);
        var dir = Directory.CreateTempSubdirectory("rempart-release-").FullName;
        try
        {
            var pem = Path.Combine(dir, "binding.pem");
            File.WriteAllText(pem, KeyConversion.ToPem(ev.BindingKeyPublic));
            var key = RandomNumberGenerator.GetBytes(32);
            File.WriteAllBytes(Path.Combine(dir, "key"), key);
            var label = Convert.ToHexStringLower([.. Encoding.ASCII.GetBytes(ReleaseWrap.Label("abc123")), 0]);
            Tool.Run("openssl", ["pkeyutl", "-encrypt", "-pubin", "-inkey", pem, "-in", Path.Combine(dir, "key"), "-out", Path.Combine(dir, "wrapped"),
                "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256", "-pkeyopt", "rsa_oaep_label:" + label]).Ok();
            var release = Release(ev, File.ReadAllBytes(Path.Combine(dir, "wrapped")), "abc123");
            Assert.Equal(Convert.ToHexStringLower(key), Unwrap(_a, ev, release));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void A_release_for_another_binding_key_or_scheme_is_refused_before_the_TPM_is_used()
    {
        var ev = Collect(_a);
        var release = Release(ev, ReleaseWrap.Seal(ev.BindingKeyPublic, new byte[32], "r1"), "r1");
        Assert.Equal("release.unwrap.binding-key", Assert.Throws<ReleaseUnwrapException>(() => Unwrap(_a, ev, release with { BindingKey = "000b" + new string('0', 64) })).Id);
        Assert.Equal("release.unwrap.scheme", Assert.Throws<ReleaseUnwrapException>(() => Unwrap(_a, ev, release with { Scheme = "rsa-pkcs1" })).Id);
        Assert.Throws<ArgumentException>(() => ReleaseWrap.Label("has/slash"));
        Assert.Throws<ArgumentException>(() => ReleaseWrap.Label(new string('a', 41)));
    }
}

using System.Diagnostics;
using System.Security.Cryptography;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Tests.Infrastructure;
using Rempart.Tpm.Transport;

namespace Rempart.Tpm.Tests.Interop;

/// <summary>TPM2_Import of objects wrapped in software, ECC salting, and swtpm over unix sockets with CMD_INIT.</summary>
public sealed class ImportAndTransportTests : IDisposable
{
    private readonly Swtpm _tpm = new("sha256");

    public void Dispose() => _tpm.Dispose();

    [Theory]
    [InlineData("rsa")]
    [InlineData("ecc")]
    public void A_secret_sealed_in_software_to_an_SRK_imports_and_unseals_only_under_its_PCR_policy(string kind)
    {
        var secret = RandomNumberGenerator.GetBytes(32);
        using var c = _tpm.Client();
        var srk = c.CreateSrk(kind);
        // ECC SRK: the salt goes through ECDH + KDFe; RSA: through our labelled OAEP.
        c.EnableParameterEncryption(srk.Handle!, srk.Public);
        var pcrs = TpmlPcrSelection.Of(TpmAlgId.Sha256, 16);
        var v = c.PcrRead(pcrs);
        var policy = new PolicyDigest(TpmAlgId.Sha256).PolicyPcr(pcrs, PcrComposite.Digest(TpmAlgId.Sha256, pcrs, (b, p) => v[b, p])).Digest;

        var blob = Duplication.SealForImport(srk.Public, secret, policy);
        var priv = c.Import(srk.Handle!, [], blob.Public, blob.Duplicate, blob.EncryptedSeed, TpmtSymDef.Null);
        var item = c.Load(srk.Handle!, priv, blob.Public);
        var s = c.StartAuthSession(TpmSe.Policy);
        c.PolicyPcr(s, [], pcrs);
        Assert.Equal(secret, c.Unseal(item, s));
        c.FlushSession(s);

        // A flipped bit anywhere in the duplicate fails its outer HMAC inside the TPM.
        var tampered = (byte[])blob.Duplicate.Clone();
        tampered[^1] ^= 1;
        var e = Assert.Throws<TpmException>(() => c.Import(srk.Handle!, [], blob.Public, tampered, blob.EncryptedSeed, TpmtSymDef.Null));
        Assert.True(e.Is(TpmRc.Integrity), e.Message);

        // After the PCR moves, the imported secret stays sealed.
        c.PcrExtend(16, new TpmlDigestValues([new TpmtHa(TpmAlgId.Sha256, new byte[32])]));
        var s2 = c.StartAuthSession(TpmSe.Policy);
        c.PolicyPcr(s2, [], pcrs);
        Assert.True(Assert.Throws<TpmException>(() => c.Unseal(item, s2)).Is(TpmRc.PolicyFail));
    }

    [Fact]
    public void A_blob_sealed_to_another_TPMs_SRK_does_not_import_here()
    {
        TpmtPublic otherSrk;
        using (var other = new Swtpm("sha256"))
        using (var oc = other.Client())
        {
            otherSrk = oc.CreateSrk().Public;
        }
        using var c = _tpm.Client();
        var srk = c.CreateSrk();
        Assert.NotEqual(srk.Name, otherSrk.Name());
        var blob = Duplication.SealForImport(otherSrk, RandomNumberGenerator.GetBytes(32), new byte[32]);
        var e = Assert.ThrowsAny<TpmException>(() => c.Import(srk.Handle!, [], blob.Public, blob.Duplicate, blob.EncryptedSeed, TpmtSymDef.Null));
        Assert.True(e.Is(TpmRc.Value) || e.Is(TpmRc.Integrity) || e.Is(TpmRc.Failure), e.Message);
    }

    [Fact]
    public void Swtpm_over_unix_sockets_is_powered_on_through_its_control_channel_and_shut_down()
    {
        var dir = Directory.CreateTempSubdirectory("rempart-unix-").FullName;
        var state = Path.Combine(dir, "state");
        Directory.CreateDirectory(state);
        Tool.Run("swtpm_setup", ["--tpm2", "--tpmstate", state, "--pcr-banks", "sha256", "--overwrite"]).Ok();
        var data = Path.Combine(dir, "tpm.sock");
        var psi = new ProcessStartInfo(Tool.Which("swtpm")) { UseShellExecute = false, RedirectStandardError = true };
        foreach (var a in new[] { "socket", "--tpm2", "--tpmstate", $"dir={state}", "--server", $"type=unixio,path={data}", "--ctrl", $"type=unixio,path={data}.ctrl" })
        {
            psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi)!;
        try
        {
            for (int i = 0; i < 100 && !(File.Exists(data) && File.Exists(data + ".ctrl")); i++)
            {
                Thread.Sleep(50);
            }
            var address = TpmAddress.Parse("swtpm:unix:" + data);
            using var ctrl = address.OpenControl();
            Assert.NotNull(ctrl);
            Assert.NotEqual(0ul, ctrl.GetCapability());
            using (var c = new TpmClient(address.Open()))
            {
                // Not powered on yet: the TPM refuses commands until CMD_INIT.
                var refused = Assert.Throws<TpmException>(() => c.Startup());
                Assert.True(refused.Is(TpmRc.Failure), refused.Message);
                c.EnsureStarted(ctrl);
                Assert.Equal(16, c.GetRandom(16).Length);
                c.Shutdown();
            }
            ctrl.Shutdown();
            Assert.True(p.WaitForExit(10_000), "swtpm did not exit after CMD_SHUTDOWN");
        }
        finally
        {
            if (!p.HasExited)
            {
                p.Kill();
            }
            Directory.Delete(dir, true);
        }
    }
}

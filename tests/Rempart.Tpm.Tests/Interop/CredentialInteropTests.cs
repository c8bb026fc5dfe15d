using System.Security.Cryptography;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Tpm.Tests.Interop;

/// <summary>MakeCredential / ActivateCredential cross-checked with tpm2-tools, RSA and ECC EKs.</summary>
public sealed class CredentialInteropTests : IDisposable
{
    private readonly Swtpm _tpm = new();
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-cred-").FullName;

    public void Dispose()
    {
        _tpm.Dispose();
        Directory.Delete(_dir, true);
    }

    private string F(string name) => Path.Combine(_dir, name);

    [Theory]
    [InlineData("rsa")]
    [InlineData("ecc")]
    public void Our_software_MakeCredential_is_recovered_by_tpm2_activatecredential(string kind)
    {
        _tpm.Tpm2("tpm2_createek", "-c", F("ek.ctx"), "-G", kind, "-u", F("ek.pub")).Ok();
        _tpm.Tpm2("tpm2_createak", "-C", F("ek.ctx"), "-c", F("ak.ctx"), "-G", kind, "-u", F("ak.pub"), "-n", F("ak.name")).Ok();
        var ekPub = TpmtPublic.ParseSized(File.ReadAllBytes(F("ek.pub")));
        var akName = File.ReadAllBytes(F("ak.name"));
        var secret = RandomNumberGenerator.GetBytes(32);

        var (blob, enc) = Credential.Make(ekPub, secret, akName);
        File.WriteAllBytes(F("cred.in"), Tpm2ToolsFiles.WriteCredential(blob, enc));

        // The EK's policy is PolicySecret(endorsement): tpm2-tools needs a policy session for it.
        _tpm.FlushAll();
        var env = _tpm.ToolEnv;
        Tool.Run("tpm2_startauthsession", ["--policy-session", "-S", F("session.ctx")], env).Ok();
        Tool.Run("tpm2_policysecret", ["-S", F("session.ctx"), "-c", "e"], env).Ok();
        Tool.Run("tpm2_activatecredential", ["-c", F("ak.ctx"), "-C", F("ek.ctx"), "-i", F("cred.in"), "-o", F("cred.out"), "-P", "session:" + F("session.ctx")], env).Ok();
        Assert.Equal(secret, File.ReadAllBytes(F("cred.out")));

        // The same credential bound to another Name must not activate.
        var wrongName = (byte[])akName.Clone();
        wrongName[^1] ^= 1;
        var (blob2, enc2) = Credential.Make(ekPub, secret, wrongName);
        File.WriteAllBytes(F("cred2.in"), Tpm2ToolsFiles.WriteCredential(blob2, enc2));
        _tpm.FlushAll();
        Tool.Run("tpm2_startauthsession", ["--policy-session", "-S", F("session2.ctx")], env).Ok();
        Tool.Run("tpm2_policysecret", ["-S", F("session2.ctx"), "-c", "e"], env).Ok();
        var bad = Tool.Run("tpm2_activatecredential", ["-c", F("ak.ctx"), "-C", F("ek.ctx"), "-i", F("cred2.in"), "-o", F("cred2.out"), "-P", "session:" + F("session2.ctx")], env);
        Assert.NotEqual(0, bad.ExitCode);
    }

    [Theory]
    [InlineData("rsa")]
    [InlineData("ecc")]
    public void Tpm2_makecredential_is_recovered_by_our_ActivateCredential(string kind)
    {
        byte[] akName;
        using (var c = _tpm.Client())
        {
            var ek = c.CreateEk(kind);
            File.WriteAllBytes(F("ek.pub"), ek.Public.ToSizedBytes());
            var ak = c.CreateAk(kind);
            akName = ak.Name;
        }
        var secret = RandomNumberGenerator.GetBytes(32);
        File.WriteAllBytes(F("secret.bin"), secret);
        Tool.Run("tpm2_makecredential", ["-T", "none", "-e", F("ek.pub"), "-s", F("secret.bin"), "-n", Convert.ToHexStringLower(akName), "-o", F("cred.bin")]).Ok();
        var (blob, enc) = Tpm2ToolsFiles.ReadCredential(File.ReadAllBytes(F("cred.bin")));

        using (var c = _tpm.Client())
        {
            var ek = c.CreateEk(kind);
            var ak = c.CreateAk(kind);
            Assert.Equal(akName, ak.Name);
            var policy = c.StartEkPolicySession();
            var recovered = c.ActivateCredential(ak.Handle!, ek.Handle!, blob, enc, keyAuth: policy);
            Assert.Equal(secret, recovered);

            // A tampered blob fails the integrity HMAC inside the TPM: a typed error.
            var tampered = new Tpm2bIdObject([.. blob.Credential[..^1], (byte)(blob.Credential[^1] ^ 1)]);
            var policy2 = c.StartEkPolicySession();
            var e = Assert.Throws<TpmException>(() => c.ActivateCredential(ak.Handle!, ek.Handle!, tampered, enc, keyAuth: policy2));
            Assert.True(e.Is(TpmRc.Integrity), e.Message);
        }
    }

    [Fact]
    public void Our_MakeCredential_and_ActivateCredential_agree_with_the_TPMs_own_MakeCredential_format()
    {
        using var c = _tpm.Client();
        var ek = c.CreateEk("rsa");
        var ak = c.CreateAk("rsa");
        var secret = RandomNumberGenerator.GetBytes(20);
        var (blob, enc) = c.MakeCredential(ek.Handle!, secret, ak.Name);
        var policy = c.StartEkPolicySession();
        Assert.Equal(secret, c.ActivateCredential(ak.Handle!, ek.Handle!, blob, enc, keyAuth: policy));
    }
}

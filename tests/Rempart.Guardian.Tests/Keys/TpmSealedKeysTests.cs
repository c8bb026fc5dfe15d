using System.Security.Cryptography;
using Rempart.Guardian.Keys;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Guardian.Tests.Keys;

/// <summary>The file provider with --key-secret-tpm: key files that open only with the operator's secret and this TPM (swtpm).</summary>
public sealed class TpmSealedKeysTests : IDisposable
{
    private static readonly byte[] Secret = "tpm-sealed-test-secret-0123456789"u8.ToArray();
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-tpmkeys-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Sealed_keys_open_only_with_the_operator_secret_and_the_same_TPM()
    {
        using var tpm = new Swtpm("sha256");
        var sealedOptions = new KeyProviderOptions(KeySecretTpm: tpm.Address);
        using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        string kid;
        byte[] z;
        using (var p = sealedOptions.Open(_dir, Secret, TimeProvider.System))
        {
            kid = p.ActiveKey.Kid;
            z = p.DeriveSharedSecret(kid, peer.ExportSubjectPublicKeyInfo());
            KeyChecks.SignatureVerifies(p);
        }
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(_dir, "keys", TpmSealedSecret.FileName)));
        using (var p = sealedOptions.Open(_dir, Secret, TimeProvider.System))
        {
            Assert.Equal(z, p.DeriveSharedSecret(kid, peer.ExportSubjectPublicKeyInfo()));
        }

        // The operator's secret alone opens nothing: not the provider, not openssl.
        KeyChecks.Throws("keys.tpm.required", () => new KeyProviderOptions().Open(_dir, Secret, TimeProvider.System).Dispose());
        KeyChecks.Throws("keys.secret.wrong", () => FileKeyProvider.Open(_dir, Secret).Dispose());
        var pass = Path.Combine(_dir, "pass");
        File.WriteAllBytes(pass, Secret);
        Assert.NotEqual(0, Tool.Run("openssl", ["pkey", "-inform", "DER", "-in", Path.Combine(_dir, "keys", $"enc-{kid}.p8"), "-passin", "file:" + pass, "-noout"]).ExitCode);

        // The same folder on another machine's TPM, or with another secret, opens nothing either.
        using (var other = new Swtpm("sha256"))
        {
            KeyChecks.Throws("keys.tpm.unseal", () => new KeyProviderOptions(KeySecretTpm: other.Address).Open(_dir, Secret, TimeProvider.System).Dispose());
        }
        KeyChecks.Throws("keys.secret.wrong", () => sealedOptions.Open(_dir, "another-secret-of-enough-length"u8, TimeProvider.System).Dispose());
    }

    [Fact]
    public void Sealing_is_chosen_when_the_keys_are_first_made()
    {
        using (new KeyProviderOptions().Open(_dir, Secret, TimeProvider.System))
        {
        }
        using var tpm = new Swtpm("sha256");
        KeyChecks.Throws("keys.tpm.existing", () => new KeyProviderOptions(KeySecretTpm: tpm.Address).Open(_dir, Secret, TimeProvider.System).Dispose());
        using var p = new KeyProviderOptions().Open(_dir, Secret, TimeProvider.System);
        KeyChecks.EcdhMatchesPeer(p, p.ActiveKey);
    }
}

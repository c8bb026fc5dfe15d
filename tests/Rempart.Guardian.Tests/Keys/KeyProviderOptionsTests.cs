using Rempart.Guardian.Keys;

namespace Rempart.Guardian.Tests.Keys;

/// <summary>`rempart-guardian serve` key-provider options: file by default; pkcs11 needs its module, token and PIN file, and takes no PIN on the command line.</summary>
public sealed class KeyProviderOptionsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-keyopts-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private ServeOptions Parse(params string[] extra)
    {
        var secret = Path.Combine(_dir, "secret");
        File.WriteAllText(secret, "a-secret-long-enough-for-the-guardian");
        return Program.Parse(["--data", _dir, "--secret-file", secret, .. extra]);
    }

    [Fact]
    public void File_is_the_default_and_pkcs11_takes_module_token_and_pin_file()
    {
        Assert.Equal("file", Parse().Keys!.Kind);
        Assert.Equal(new KeyProviderOptions("pkcs11", "/m.so", "tok", "/pin"),
            Parse("--key-provider", "pkcs11", "--pkcs11-module", "/m.so", "--pkcs11-token", "tok", "--pkcs11-pin-file", "/pin").Keys);
        Assert.Equal("device:/dev/tpmrm0", Parse("--key-secret-tpm", "device:/dev/tpmrm0").Keys!.KeySecretTpm);
    }

    public static TheoryData<string[]> Refused() => new()
    {
        new[] { "--key-provider", "hsm" },
        new[] { "--key-provider", "pkcs11" },
        new[] { "--key-provider", "pkcs11", "--pkcs11-module", "/m.so", "--pkcs11-token", "tok" },
        new[] { "--key-provider", "pkcs11", "--pkcs11-module", "/m.so", "--pkcs11-pin-file", "/pin" },
        new[] { "--pkcs11-pin", "1234" },
        new[] { "--key-provider", "pkcs11", "--pkcs11-module", "/m.so", "--pkcs11-token", "tok", "--pkcs11-pin-file", "/pin", "--key-secret-tpm", "device:/dev/tpmrm0" },
    };

    [Theory]
    [MemberData(nameof(Refused))]
    public void Incomplete_or_unknown_key_options_are_refused(string[] args) =>
        Assert.Throws<ArgumentException>(() => Parse(args));
}

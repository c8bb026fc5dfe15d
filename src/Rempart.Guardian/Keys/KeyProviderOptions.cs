using Rempart.KeyProtection;

namespace Rempart.Guardian.Keys;

/// <summary>Which key provider holds the Guardian's keys (<c>--key-provider file|pkcs11</c> and the PKCS#11 options).</summary>
public sealed record KeyProviderOptions(string Kind = "file", string? Pkcs11Module = null, string? Pkcs11Token = null, string? Pkcs11PinFile = null)
{
    /// <summary>Opens the provider for the data folder <paramref name="dataDir"/>, making its first keys at first start.</summary>
    public IGuardianKeyProvider Open(string dataDir, ReadOnlySpan<byte> secret, TimeProvider time) => Kind switch
    {
        "file" => FileKeyProvider.Open(dataDir, secret, time),
        "pkcs11" => Pkcs11KeyProvider.Open(dataDir,
            Pkcs11Module ?? throw new KeyProviderException("keys.pkcs11.options", "--key-provider pkcs11 needs --pkcs11-module PATH"),
            Pkcs11Token ?? throw new KeyProviderException("keys.pkcs11.options", "--key-provider pkcs11 needs --pkcs11-token LABEL"),
            Pkcs11PinFile ?? throw new KeyProviderException("keys.pkcs11.options", "--key-provider pkcs11 needs --pkcs11-pin-file FILE (the user PIN, never on the command line)"),
            time),
        _ => throw new KeyProviderException("keys.provider.unknown", $"unknown key provider '{Kind}' (file or pkcs11)"),
    };
}

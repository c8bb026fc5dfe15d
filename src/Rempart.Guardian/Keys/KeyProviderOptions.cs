using Rempart.KeyProtection;

namespace Rempart.Guardian.Keys;

/// <summary>
/// Which key provider holds the Guardian's keys (<c>--key-provider file|pkcs11</c>, the PKCS#11
/// options, and <c>--key-secret-tpm ADDR</c>: the file provider's keys also sealed to this machine's TPM).
/// </summary>
public sealed record KeyProviderOptions(string Kind = "file", string? Pkcs11Module = null, string? Pkcs11Token = null, string? Pkcs11PinFile = null,
    string? KeySecretTpm = null)
{
    /// <summary>Opens the provider for the data folder <paramref name="dataDir"/>, making its first keys at first start.</summary>
    public IGuardianKeyProvider Open(string dataDir, ReadOnlySpan<byte> secret, TimeProvider time) => Kind switch
    {
        "file" => OpenFile(dataDir, secret, time),
        "pkcs11" => Pkcs11KeyProvider.Open(dataDir,
            Pkcs11Module ?? throw new KeyProviderException("keys.pkcs11.options", "--key-provider pkcs11 needs --pkcs11-module PATH"),
            Pkcs11Token ?? throw new KeyProviderException("keys.pkcs11.options", "--key-provider pkcs11 needs --pkcs11-token LABEL"),
            Pkcs11PinFile ?? throw new KeyProviderException("keys.pkcs11.options", "--key-provider pkcs11 needs --pkcs11-pin-file FILE (the user PIN, never on the command line)"),
            time),
        _ => throw new KeyProviderException("keys.provider.unknown", $"unknown key provider '{Kind}' (file or pkcs11)"),
    };

    private FileKeyProvider OpenFile(string dataDir, ReadOnlySpan<byte> secret, TimeProvider time)
    {
        if (KeySecretTpm is null)
        {
            return TpmSealedSecret.IsSealed(dataDir)
                ? throw new KeyProviderException("keys.tpm.required", $"the keys in {Path.Combine(dataDir, "keys")} are sealed to a TPM: start with --key-secret-tpm ADDR (device:/dev/tpmrm0)")
                : FileKeyProvider.Open(dataDir, secret, time);
        }
        if (secret.Length < 16)
        {
            throw new KeyProviderException("keys.secret.short", "the Guardian's key secret must be at least 16 bytes (REMPART_GUARDIAN_SECRET or --secret-file)");
        }
        var password = TpmSealedSecret.Password(dataDir, KeySecretTpm, secret);
        try
        {
            return FileKeyProvider.Open(dataDir, password, time);
        }
        finally
        {
            System.Security.Cryptography.CryptographicOperations.ZeroMemory(password);
        }
    }
}

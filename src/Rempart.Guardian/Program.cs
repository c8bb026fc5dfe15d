using System.Net;
using System.Text;

namespace Rempart.Guardian;

/// <summary>
/// <c>rempart-guardian serve --data DIR [--listen ADDR:PORT] [--postgres CONNECTION]
/// [--trusted-ek-cas DIR] [--insecure-http] [--secret-file FILE]</c>. The secret that protects
/// the Guardian's keys at rest comes from REMPART_GUARDIAN_SECRET or --secret-file, never from
/// the command line.
/// </summary>
public static class Program
{
    private const string Help = """
        Usage: rempart-guardian serve --data DIR [--listen ADDR:PORT] [--postgres CONNECTION]
                                      [--trusted-ek-cas DIR] [--insecure-http] [--secret-file FILE]
                                      [--rate-limit N] [--key-provider file|pkcs11]
                                      [--pkcs11-module PATH --pkcs11-token LABEL --pkcs11-pin-file FILE]
                                      [--key-secret-tpm ADDR]

        Runs the Guardian (attestation service). HTTPS by default with a self-signed certificate made
        at first start (its fingerprint is printed); --insecure-http only on loopback. Storage is SQLite
        in DIR unless --postgres is given. The admin API token is written once to DIR/admin-token (0600).
        The secret protecting the token-signing and TLS keys at rest: REMPART_GUARDIAN_SECRET or --secret-file.
        Trusted TPM CA certificates for EK certificates: --trusted-ek-cas (default DIR/trusted-ek-cas).
        --rate-limit N: requests per second allowed to one client address (default 200; 0 = no limit,
        for load tests only).
        --key-provider: where the token-signing and key-protector keys live: file (default; encrypted
        under DIR/keys with the key secret) or pkcs11 (generated in a PKCS#11 token, never leaving it:
        --pkcs11-module the module's path, --pkcs11-token the token label, --pkcs11-pin-file a 0600 file
        holding the user PIN). --key-secret-tpm device:/dev/tpmrm0: the file provider's keys also need
        this machine's TPM (chosen when the keys are first made).

        """;

    public static async Task<int> Main(string[] args)
    {
        if (args.Length == 0 || args[0] is "--help" or "-h" || args[0] != "serve")
        {
            Console.Out.Write(Help);
            return args.Length > 0 && args[0] is "--help" or "-h" ? 0 : 2;
        }
        try
        {
            var opts = Parse(args[1..]);
            await using var app = await GuardianServer.BuildAsync(opts);
            await app.StartAsync();
            Console.Out.WriteLine($"guardian: listening on {(opts.InsecureHttp ? "http" : "https")}://{opts.Listen}");
            await app.WaitForShutdownAsync();
            return 0;
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 2;
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or UnauthorizedAccessException
            or System.Security.Cryptography.CryptographicException or System.Net.Sockets.SocketException
            or Rempart.KeyProtection.KeyProviderException)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 3;
        }
    }

    internal static ServeOptions Parse(string[] args)
    {
        string? data = null, listen = null, postgres = null, cas = null, secretFile = null;
        string keyProvider = "file";
        string? pkcs11Module = null, pkcs11Token = null, pkcs11PinFile = null, keySecretTpm = null;
        bool http = false;
        int rateLimit = 200;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--data": data = Next(); break;
                case "--listen": listen = Next(); break;
                case "--postgres": postgres = Next(); break;
                case "--trusted-ek-cas": cas = Next(); break;
                case "--secret-file": secretFile = Next(); break;
                case "--insecure-http": http = true; break;
                case "--key-provider":
                    keyProvider = Next();
                    if (keyProvider is not ("file" or "pkcs11"))
                    {
                        throw new ArgumentException($"--key-provider '{keyProvider}': file or pkcs11");
                    }
                    break;
                case "--pkcs11-module": pkcs11Module = Next(); break;
                case "--pkcs11-token": pkcs11Token = Next(); break;
                case "--pkcs11-pin-file": pkcs11PinFile = Next(); break;
                case "--key-secret-tpm": keySecretTpm = Next(); break;
                case "--rate-limit":
                    var v = Next();
                    rateLimit = int.TryParse(v, out var n) && n >= 0 ? n : throw new ArgumentException($"--rate-limit '{v}' is not a number of requests per second (0 = no limit)");
                    break;
                default: throw new ArgumentException($"unknown option {args[i]} (see --help)");
            }
        }
        if (data is null)
        {
            throw new ArgumentException("missing --data DIR");
        }
        var endpoint = IPEndPoint.TryParse(listen ?? "127.0.0.1:8443", out var ep) ? ep : throw new ArgumentException($"--listen '{listen}' is not ADDR:PORT");
        byte[] secret;
        if (secretFile is not null)
        {
            secret = File.Exists(secretFile) ? File.ReadAllBytes(secretFile) : throw new ArgumentException($"--secret-file {secretFile}: no such file");
        }
        else if (Environment.GetEnvironmentVariable("REMPART_GUARDIAN_SECRET") is { Length: > 0 } env)
        {
            secret = Encoding.UTF8.GetBytes(env);
        }
        else
        {
            throw new ArgumentException("no key secret: set REMPART_GUARDIAN_SECRET or pass --secret-file (it protects the Guardian's keys at rest)");
        }
        if (keyProvider == "pkcs11" && (pkcs11Module is null || pkcs11Token is null || pkcs11PinFile is null))
        {
            throw new ArgumentException("--key-provider pkcs11 needs --pkcs11-module PATH, --pkcs11-token LABEL and --pkcs11-pin-file FILE");
        }
        if (keyProvider == "pkcs11" && keySecretTpm is not null)
        {
            throw new ArgumentException("--key-secret-tpm seals the file provider's keys; with pkcs11 the keys are in the token");
        }
        var full = Path.GetFullPath(data);
        return new ServeOptions(new GuardianOptions { DataDir = full, TrustedEkCaDir = cas ?? Path.Combine(full, "trusted-ek-cas"), RateLimitPerSecond = rateLimit }, endpoint, http, postgres, secret,
            new Keys.KeyProviderOptions(keyProvider, pkcs11Module, pkcs11Token, pkcs11PinFile, keySecretTpm));
    }
}

using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.KeyProtection;

namespace Rempart.Cli;

/// <summary>
/// <c>rempart owner create</c>: the tenant's owner key (docs/key-protector.md), which every key
/// protector is also wrapped for so the tenant can recover a VM's key offline. Also the helpers the
/// key protector verbs share: the owner passphrase, files written once with a given mode, and the
/// mapping of key-protection failures to exit codes.
/// </summary>
internal static class OwnerCommands
{
    public const string PassphraseEnv = "REMPART_OWNER_PASSPHRASE";
    private const int MinPassphraseLength = 8;

    private const string Help = """
        Usage: rempart owner create --out DIR [--passphrase-file FILE] [--format text|json]

        Makes a NIST P-384 owner key and writes, refusing to overwrite either:
          DIR/owner.key  the private key, encrypted PKCS#8 (PBKDF2-SHA256 600,000 iterations, AES-256), mode 0600
          DIR/owner.pub  the public key (SPKI PEM), given to 'rempart kp create --owner'
        The passphrase comes from REMPART_OWNER_PASSPHRASE or --passphrase-file (first line), never
        from the command line; at least 8 characters. Keep owner.key and its passphrase offline: with
        them, 'rempart kp recover' opens every key protector made for owner.pub.

        """;

    /// <summary><paramref name="argv"/> starts with the verb ("create", or --help).</summary>
    public static int Create(string[] argv)
    {
        if (argv[0] is "--help" or "-h")
        {
            Console.Out.Write(Help);
            return Program.Ok;
        }
        var a = new Args(argv.Skip(1), new HashSet<string> { "help" });
        if (Program.ShowHelp(a, Help))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var dir = a.Require("out", "folder for owner.key and owner.pub");
        var passphrase = ReadPassphrase(a);
        try
        {
            a.EnsureAllUsed();
            if (a.Positionals.Count > 0)
            {
                throw new UsageException($"unexpected argument '{a.Positionals[0]}'");
            }
            if (passphrase.Length < MinPassphraseLength)
            {
                throw new UsageException($"the owner passphrase must have at least {MinPassphraseLength} characters");
            }
            var keyPath = Path.Combine(dir, "owner.key");
            var pubPath = Path.Combine(dir, "owner.pub");
            foreach (var p in new[] { keyPath, pubPath })
            {
                if (File.Exists(p))
                {
                    return Refuse("owner.exists", $"{p} exists: refusing to overwrite an owner key (key protectors made for it would become unrecoverable)");
                }
            }
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            using var owner = OwnerKey.Generate();
            WriteNew(keyPath, Encoding.ASCII.GetBytes(owner.ToEncryptedPem(passphrase)), secret: true);
            WriteNew(pubPath, Encoding.ASCII.GetBytes(owner.PublicKey.ToPem() + "\n"), secret: true);
            var json = new JsonObject
            {
                ["kid"] = owner.PublicKey.Kid,
                ["fingerprint"] = owner.PublicKey.Fingerprint,
                ["privateKey"] = keyPath,
                ["publicKey"] = pubPath,
            };
            Print(format, json, $"owner key {owner.PublicKey.Kid} (SHA-256 {owner.PublicKey.Fingerprint})\n  {keyPath}  encrypted private key: keep it and its passphrase offline\n  {pubPath}  public key, for 'rempart kp create --owner'");
            return Program.Ok;
        }
        finally
        {
            Array.Clear(passphrase);
        }
    }

    /// <summary>The owner passphrase from --passphrase-file (first line) or REMPART_OWNER_PASSPHRASE; never from argv.</summary>
    internal static char[] ReadPassphrase(Args a)
    {
        if (a.Get("passphrase-file") is { } file)
        {
            if (!File.Exists(file))
            {
                throw new UsageException($"--passphrase-file {file}: no such file");
            }
            var bytes = File.ReadAllBytes(file);
            try
            {
                int end = Array.IndexOf(bytes, (byte)'\n');
                int length = end < 0 ? bytes.Length : end;
                if (length > 0 && bytes[length - 1] == '\r')
                {
                    length--;
                }
                var chars = Encoding.UTF8.GetChars(bytes, 0, length);
                return chars.Length > 0 ? chars : throw new UsageException($"--passphrase-file {file}: empty first line");
            }
            finally
            {
                Array.Clear(bytes);
            }
        }
        return Environment.GetEnvironmentVariable(PassphraseEnv) is { Length: > 0 } env
            ? env.ToCharArray()
            : throw new UsageException($"no owner passphrase: set {PassphraseEnv} or give --passphrase-file FILE");
    }

    /// <summary>Reads the owner private key file with the passphrase (exit 1 on a wrong passphrase, 2 on a file that is not an owner key).</summary>
    internal static OwnerKey ReadOwnerKey(Args a, string path)
    {
        var pem = ReadText(path, "--owner-key");
        var passphrase = ReadPassphrase(a);
        try
        {
            return OwnerKey.FromEncryptedPem(pem, passphrase);
        }
        finally
        {
            Array.Clear(passphrase);
        }
    }

    internal static string ReadText(string path, string option) =>
        File.Exists(path) ? File.ReadAllText(path) : throw new UsageException($"{option} {path}: no such file");

    internal static byte[] ReadBytes(string path, string option) =>
        File.Exists(path) ? File.ReadAllBytes(path) : throw new UsageException($"{option} {path}: no such file");

    /// <summary>Creates a file that must not exist yet (0600 for secrets, 0644 otherwise); an existing file is an IOException.</summary>
    internal static void WriteNew(string path, ReadOnlySpan<byte> content, bool secret)
    {
        var mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | (secret ? 0 : UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        using var f = new FileStream(path, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = mode });
        f.Write(content);
        f.Flush(flushToDisk: true);
    }

    /// <summary>Prints a refusal as "error: ID: message" and returns exit code 1.</summary>
    internal static int Refuse(string id, string message)
    {
        Console.Error.WriteLine($"error: {id}: {message}");
        return Program.Invalid;
    }

    /// <summary>
    /// Runs a key-protection verb, mapping its failures to the documented exit codes: malformed key
    /// protector, metadata or key files → 2; failed checks (integrity, tag, signature, fingerprint,
    /// passphrase, no wrap) → 1. One line on stderr, naming the stable id; never a stack trace.
    /// </summary>
    internal static int Guard(Func<int> verb)
    {
        try
        {
            return verb();
        }
        catch (KeyProtectorFormatException e)
        {
            Console.Error.WriteLine($"error: {e.Id}: {e.Message}");
            return Program.Usage;
        }
        catch (GuardianMetadataFormatException e)
        {
            Console.Error.WriteLine($"error: {e.Id}: {e.Message}");
            return Program.Usage;
        }
        catch (OwnerKeyException e) when (e.Id != "owner.key.decrypt")
        {
            Console.Error.WriteLine($"error: {e.Id}: {e.Message}");
            return Program.Usage;
        }
        catch (OwnerKeyException e)
        {
            return Refuse(e.Id, e.Message);
        }
        catch (KeyProtectorException e)
        {
            return Refuse(e.Id, e.Message);
        }
        catch (GuardianMetadataException e)
        {
            return Refuse(e.Id, e.Message);
        }
    }

    internal static void Print(string format, JsonNode json, string text) =>
        Console.Out.WriteLine(format == "json" ? json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) : text);
}

using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Rempart.KeyProtection;

namespace Rempart.Host.Vm;

/// <summary>What <c>qemu-img info</c> reports about an encrypted disk (no key needed).</summary>
public sealed record DiskInfo(string Format, long VirtualSize, bool Encrypted, string? EncryptFormat, string? CipherAlg, string? CipherMode, string? IvgenAlg, long ClusterSize);

/// <summary>
/// A VM disk: a qcow2 file with QEMU's LUKS encryption (LUKS1 header inside the qcow2, AES-256-XTS,
/// plain64 IVs, 512-byte sectors). The LUKS passphrase is base64(HKDF(VMK, "disk/&lt;id&gt;")) — 44
/// ASCII characters, because QEMU requires a UTF-8 passphrase — and reaches qemu-img only on its
/// stdin (<c>--object secret,id=sec0,file=/dev/stdin,format=raw</c>). Layout and the import
/// throughput finding: docs/vm-bundle.md.
/// </summary>
public static partial class EncryptedDisk
{
    /// <summary>
    /// PBKDF2 time per keyslot. The passphrase is a 256-bit HKDF output, so stretching adds nothing;
    /// QEMU's default (2000 ms) would cost two seconds of CPU at every open (each VM start).
    /// </summary>
    public const int IterTimeMs = 10;

    public const string SecretId = "sec0";

    /// <summary>The -o value for a new encrypted qcow2.</summary>
    public static string CreateOptions =>
        $"encrypt.format=luks,encrypt.key-secret={SecretId},encrypt.cipher-alg=aes-256,encrypt.cipher-mode=xts,encrypt.ivgen-alg=plain64,encrypt.hash-alg=sha256,encrypt.iter-time={IterTimeMs}";

    /// <summary>The --object that reads the passphrase from the tool's stdin.</summary>
    public static string SecretObject(string path = "/dev/stdin") => $"secret,id={SecretId},file={path},format=raw";

    /// <summary>
    /// The LUKS passphrase for disk <paramref name="diskId"/> (ASCII base64 of the 32-byte derived
    /// key), for the launcher to hand QEMU by file descriptor. The caller wipes it.
    /// </summary>
    public static byte[] Passphrase(VmMasterKey vmk, string diskId)
    {
        Span<byte> key = stackalloc byte[32];
        try
        {
            VmKeys.Derive(vmk.Bytes, VmKeys.Disk(diskId), key);
            return ToolProcess.Ascii(key, hex: false);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    /// <summary>An empty encrypted disk of <paramref name="sizeBytes"/> bytes.</summary>
    public static void Create(string path, long sizeBytes, VmMasterKey vmk, string diskId, CancellationToken cancel = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sizeBytes, 1L << 20);
        NotThere(path);
        try
        {
            RunWithKey(vmk, diskId, "create",
                ["create", "-q", "--object", SecretObject(), "-f", "qcow2", "-o", CreateOptions, path, sizeBytes.ToString(CultureInfo.InvariantCulture)],
                null, cancel);
            File.SetUnixFileMode(path, SecureFiles.FileMode);
        }
        catch
        {
            File.Delete(path);
            throw;
        }
    }

    /// <summary>
    /// Imports <paramref name="source"/> (any format qemu-img reads; <paramref name="sourceFormat"/>
    /// e.g. raw or qcow2, never probed) into a new encrypted disk. <paramref name="progress"/> gets 0-100.
    /// </summary>
    public static void Import(string source, string sourceFormat, string path, VmMasterKey vmk, string diskId,
        IProgress<double>? progress = null, CancellationToken cancel = default)
    {
        if (!File.Exists(source))
        {
            throw new VmBundleException("bundle.missing", $"no image to import at {source}");
        }
        NotThere(path);
        try
        {
            try
            {
                RunWithKey(vmk, diskId, "import", ImportArgs(source, sourceFormat, path, "none"), progress, cancel);
            }
            catch (VmBundleException e) when (e.Id == "disk.tool" && e.Message.Contains("Invalid argument", StringComparison.Ordinal))
            {
                // A filesystem without O_DIRECT: the page cache path (costs a copy per byte).
                File.Delete(path);
                RunWithKey(vmk, diskId, "import", ImportArgs(source, sourceFormat, path, "writeback"), progress, cancel);
            }
            File.SetUnixFileMode(path, SecureFiles.FileMode);
        }
        catch
        {
            File.Delete(path);
            throw;
        }
    }

    /// <summary>
    /// qemu-img convert with -W (out-of-order writes) and -m 8 (8 coroutines, so encryption runs
    /// in QEMU's thread pool on every core) and, where the filesystem allows, -t none (O_DIRECT:
    /// no copy into the page cache). docs/vm-bundle.md, "Import throughput".
    /// </summary>
    internal static string[] ImportArgs(string source, string sourceFormat, string path, string cache) =>
        ["convert", "-p", "-W", "-m", "8", "-t", cache, "--object", SecretObject(), "-f", sourceFormat, "-O", "qcow2", "-o", CreateOptions, source, path];

    private static void NotThere(string path)
    {
        if (File.Exists(path))
        {
            throw new VmBundleException("bundle.exists", $"{path} already exists");
        }
    }

    /// <summary>Copies the guest-visible content out to a raw file (recovery, tests). Needs the key.</summary>
    public static void ExportRaw(string path, VmMasterKey vmk, string diskId, string rawOut, CancellationToken cancel = default) =>
        RunWithKey(vmk, diskId, "export",
            ["convert", "--object", SecretObject(), "--image-opts", ImageOpts(path), "-O", "raw", rawOut], null, cancel);

    /// <summary><c>qemu-img check</c> with the key: the LUKS keyslot opens and the qcow2 metadata is consistent.</summary>
    public static void Check(string path, VmMasterKey vmk, string diskId, CancellationToken cancel = default) =>
        RunWithKey(vmk, diskId, "check", ["check", "-q", "--object", SecretObject(), "--image-opts", ImageOpts(path)], null, cancel);

    /// <summary><c>--image-opts</c> for an encrypted disk: qcow2 over the file, key from <see cref="SecretId"/>.</summary>
    public static string ImageOpts(string path) =>
        $"driver=qcow2,file.driver=file,file.filename={path.Replace(",", ",,", StringComparison.Ordinal)},encrypt.format=luks,encrypt.key-secret={SecretId}";

    /// <summary><c>qemu-img info --output=json</c>, without the key (the LUKS header's public fields).</summary>
    public static DiskInfo Inspect(string path)
    {
        var r = ToolProcess.Run("qemu-img", ["info", "-U", "--output=json", "-f", "qcow2", path]);
        if (r.ExitCode != 0)
        {
            throw new VmBundleException("disk.format", $"qemu-img info {path}: {r.Stderr.Trim()}");
        }
        try
        {
            using var doc = JsonDocument.Parse(r.Stdout);
            var root = doc.RootElement;
            string? Enc(string name) =>
                root.TryGetProperty("format-specific", out var fs) && fs.GetProperty("data").TryGetProperty("encrypt", out var e)
                && e.TryGetProperty(name, out var v) ? v.GetString() : null;
            return new DiskInfo(
                root.GetProperty("format").GetString()!,
                root.GetProperty("virtual-size").GetInt64(),
                root.TryGetProperty("encrypted", out var enc) && enc.GetBoolean(),
                Enc("format"), Enc("cipher-alg"), Enc("cipher-mode"), Enc("ivgen-alg"),
                root.TryGetProperty("cluster-size", out var cs) ? cs.GetInt64() : 0);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new VmBundleException("disk.format", $"qemu-img info {path}: unexpected output", e);
        }
    }

    /// <summary>Refuses a disk that is not a qcow2 with LUKS AES-256-XTS (plain64).</summary>
    public static DiskInfo Verify(string path)
    {
        var i = Inspect(path);
        if (i is not { Format: "qcow2", Encrypted: true, EncryptFormat: "luks", CipherAlg: "aes-256", CipherMode: "xts", IvgenAlg: "plain64" })
        {
            throw new VmBundleException("disk.format",
                $"{path} is not an encrypted disk of this bundle: format {i.Format}, encrypted {i.Encrypted}, {i.EncryptFormat} {i.CipherAlg}-{i.CipherMode} ({i.IvgenAlg}); expected qcow2, luks aes-256-xts (plain64)");
        }
        return i;
    }

    /// <summary>
    /// QEMU's LUKS calibration (crypto/pbkdf.c) gives up with "Unable to get accurate CPU usage" when
    /// its first PBKDF2 round reads 0 ms of thread CPU time — tick-sampled accounting on a loaded host
    /// can miss a short burst. Nothing was written that matters (the half-made file is removed): try again.
    /// </summary>
    private const string CalibrationFlake = "Unable to get accurate CPU usage";

    private static void RunWithKey(VmMasterKey vmk, string diskId, string what, string[] args, IProgress<double>? progress, CancellationToken cancel)
    {
        var pass = Passphrase(vmk, diskId);
        ToolProcess.Result r;
        try
        {
            for (int attempt = 1; ; attempt++)
            {
                r = ToolProcess.Run("qemu-img", args, pass, onOutput: progress is null ? null : line => Report(line, progress), cancel: cancel);
                if (r.ExitCode == 0 || attempt == 3 || !r.Stderr.Contains(CalibrationFlake, StringComparison.Ordinal))
                {
                    break;
                }
                File.Delete(args[^1].All(char.IsAsciiDigit) ? args[^2] : args[^1]); // the target: last argument, or the one before the size
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(pass);
        }
        if (r.ExitCode != 0)
        {
            string err = r.Stderr.Trim();
            bool key = err.Contains("Invalid password", StringComparison.Ordinal) || err.Contains("cannot unlock", StringComparison.Ordinal);
            throw new VmBundleException(key ? "disk.key" : "disk.tool",
                key ? $"disk {diskId}: the key does not open it ({what})" : $"disk {diskId}: qemu-img {what} failed (exit {r.ExitCode}): {err}");
        }
        progress?.Report(100);
    }

    private static void Report(string line, IProgress<double> progress)
    {
        var m = ProgressLine().Match(line);
        if (m.Success && double.TryParse(m.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double pct))
        {
            progress.Report(Math.Clamp(pct, 0, 100));
        }
    }

    [GeneratedRegex(@"\((\d+(?:\.\d+)?)/100%\)")]
    private static partial Regex ProgressLine();
}

/// <summary>Reading an image to import.</summary>
internal static class EncryptedDiskSource
{
    /// <summary>The virtual size of <paramref name="source"/> read as <paramref name="format"/>.</summary>
    public static long VirtualSize(string source, string format)
    {
        if (!File.Exists(source))
        {
            throw new VmBundleException("bundle.missing", $"no image to import at {source}");
        }
        var r = ToolProcess.Run("qemu-img", ["info", "-U", "--output=json", "-f", format, source]);
        if (r.ExitCode != 0)
        {
            throw new VmBundleException("disk.tool", $"qemu-img info {source}: {r.Stderr.Trim()}");
        }
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
        return doc.RootElement.GetProperty("virtual-size").GetInt64();
    }
}

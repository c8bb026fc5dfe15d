using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Rempart.KeyProtection;

namespace Rempart.Host.Vm;

/// <summary>
/// The UEFI variable store at rest (<c>nvram.enc</c>): AES-256-GCM under HKDF(VMK, "nvram"), with a
/// header that names the format, its version and a write counter, all authenticated together with
/// the VM id. Format (docs/vm-bundle.md, "nvram.enc"), big-endian:
/// <code>
/// 0   8  magic "RMPTNVRM"
/// 8   1  version = 1
/// 9   8  counter (u64, ≥ 1; +1 at each re-encryption)
/// 17 12  nonce (random)
/// 29  4  length of the variable store n (u32, 1 .. 64 MiB)
/// 33  n  ciphertext
/// 33+n 16 tag
/// AAD = "rempart/nvram/v1" ‖ u32(len(vmId)) ‖ vmId ‖ bytes 0..32 of the file
/// </code>
/// Parsing is exact: any other magic, version, length or size is <c>nvram.format</c>; a tag that
/// does not verify (any byte changed, another VM's file, another key) is <c>nvram.integrity</c>.
/// </summary>
public sealed class NvramStore(string path, string vmId)
{
    public const int MaxVarsSize = 64 << 20;
    public const int HeaderSize = 33;
    public const int TagSize = 16;
    public const byte Version = 1;
    private static readonly byte[] Magic = "RMPTNVRM"u8.ToArray();
    private static readonly byte[] AadLabel = "rempart/nvram/v1"u8.ToArray();

    public string Path { get; } = path;

    public string VmId { get; } = vmId;

    /// <summary>The parsed header of an nvram.enc file (shape only; authenticity needs the key).</summary>
    public sealed record Header(ulong Counter, byte[] Nonce, int Length);

    /// <summary>Creates the store from a firmware variable template (OVMF_VARS_*.fd), counter 1.</summary>
    public void CreateFromTemplate(VmMasterKey vmk, string templatePath)
    {
        if (File.Exists(Path))
        {
            throw new VmBundleException("bundle.exists", $"{Path} already exists");
        }
        var vars = File.ReadAllBytes(templatePath);
        if (vars.Length is 0 or > MaxVarsSize)
        {
            throw new VmBundleException("nvram.format", $"template {templatePath}: {vars.Length} bytes, expected 1 .. {MaxVarsSize}");
        }
        Write(vmk.Bytes, vars, 1);
    }

    /// <summary>Reads, authenticates and decrypts the variable store; the caller wipes the result.</summary>
    public byte[] Decrypt(VmMasterKey vmk) => Decrypt(vmk.Bytes, out _);

    /// <summary>The counter of the stored file (parsed, not authenticated).</summary>
    public ulong Counter => Parse(ReadFile()).Counter;

    /// <summary>
    /// Decrypts the store to a memory-backed file for QEMU's pflash (a 0600 file in a 0700 folder
    /// under <paramref name="runRoot"/>, /dev/shm by default). Disposing the handle re-encrypts the
    /// store if the firmware changed it, then overwrites and deletes the clear copy. The handle keeps
    /// HKDF(VMK, "nvram") — not the VMK — until then.
    /// </summary>
    public NvramRunCopy OpenForRun(VmMasterKey vmk, string runRoot = "/dev/shm")
    {
        var key = new byte[32];
        byte[]? vars = null;
        try
        {
            VmKeys.Derive(vmk.Bytes, VmKeys.Nvram, key);
            vars = DecryptWithKey(key, ReadFile(), out var header);
            string dir = System.IO.Path.Combine(runRoot, "rempart-nvram-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12)));
            Directory.CreateDirectory(dir, SecureFiles.DirMode);
            string file = System.IO.Path.Combine(dir, "vars.fd");
            using (var f = new FileStream(file, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = SecureFiles.FileMode }))
            {
                f.Write(vars);
            }
            return new NvramRunCopy(this, key, vars, header.Counter, dir, file);
        }
        catch
        {
            CryptographicOperations.ZeroMemory(key);
            if (vars is not null)
            {
                CryptographicOperations.ZeroMemory(vars);
            }
            throw;
        }
    }

    /// <summary>
    /// Takes charge of the clear copy a previous agent process left for a VM that is still running
    /// (<see cref="NvramRunCopy.Path"/> of that run): the stored file is authenticated with the key,
    /// and the copy is re-encrypted at close whatever its content (what it started from is not known
    /// any more), then overwritten and removed like any run copy.
    /// </summary>
    public NvramRunCopy AdoptRunCopy(VmMasterKey vmk, string runCopyPath)
    {
        if (!File.Exists(runCopyPath) || System.IO.Path.GetFileName(runCopyPath) != "vars.fd")
        {
            throw new VmBundleException("nvram.missing", $"no running copy of the variable store at {runCopyPath}");
        }
        var key = new byte[32];
        try
        {
            VmKeys.Derive(vmk.Bytes, VmKeys.Nvram, key);
            var stored = DecryptWithKey(key, ReadFile(), out var header);
            CryptographicOperations.ZeroMemory(stored);
            return new NvramRunCopy(this, key, [], header.Counter, System.IO.Path.GetDirectoryName(runCopyPath)!, runCopyPath);
        }
        catch
        {
            CryptographicOperations.ZeroMemory(key);
            throw;
        }
    }

    /// <summary>Strict parse of the header and sizes (<c>nvram.format</c>).</summary>
    public static Header Parse(ReadOnlySpan<byte> file)
    {
        if (file.Length < HeaderSize + 1 + TagSize)
        {
            throw Format(0, $"at least {HeaderSize + 1 + TagSize} bytes, got {file.Length}");
        }
        if (!file[..8].SequenceEqual(Magic))
        {
            throw Format(0, "the magic \"RMPTNVRM\"");
        }
        if (file[8] != Version)
        {
            throw Format(8, $"version {Version}, got {file[8]}");
        }
        ulong counter = BinaryPrimitives.ReadUInt64BigEndian(file[9..]);
        if (counter == 0)
        {
            throw Format(9, "a counter of at least 1");
        }
        uint length = BinaryPrimitives.ReadUInt32BigEndian(file[29..]);
        if (length is 0 or > MaxVarsSize)
        {
            throw Format(29, $"a length of 1 .. {MaxVarsSize}, got {length}");
        }
        if ((long)file.Length != HeaderSize + (long)length + TagSize)
        {
            throw Format(file.Length, $"{HeaderSize + (long)length + TagSize} bytes in all (header, {length} bytes, tag), got {file.Length}");
        }
        return new Header(counter, file[17..29].ToArray(), (int)length);
    }

    internal byte[] Decrypt(ReadOnlySpan<byte> vmk, out Header header)
    {
        Span<byte> key = stackalloc byte[32];
        try
        {
            VmKeys.Derive(vmk, VmKeys.Nvram, key);
            return DecryptWithKey(key, ReadFile(), out header);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    internal byte[] DecryptWithKey(ReadOnlySpan<byte> key, ReadOnlySpan<byte> file, out Header header)
    {
        header = Parse(file);
        var plain = new byte[header.Length];
        try
        {
            using var gcm = new AesGcm(key, TagSize);
            gcm.Decrypt(header.Nonce, file.Slice(HeaderSize, header.Length), file[^TagSize..], plain, Aad(file[..HeaderSize]));
            return plain;
        }
        catch (AuthenticationTagMismatchException e)
        {
            CryptographicOperations.ZeroMemory(plain);
            throw new VmBundleException("nvram.integrity", $"{Path}: the variable store does not authenticate (changed, another VM's, or not this VM's key)", e);
        }
    }

    internal void Write(ReadOnlySpan<byte> vmk, ReadOnlySpan<byte> vars, ulong counter)
    {
        Span<byte> key = stackalloc byte[32];
        try
        {
            VmKeys.Derive(vmk, VmKeys.Nvram, key);
            WriteWithKey(key, vars, counter);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    internal void WriteWithKey(ReadOnlySpan<byte> key, ReadOnlySpan<byte> vars, ulong counter)
    {
        if (vars.Length is 0 or > MaxVarsSize)
        {
            throw new VmBundleException("nvram.format", $"a variable store of {vars.Length} bytes (1 .. {MaxVarsSize})");
        }
        var file = new byte[HeaderSize + vars.Length + TagSize];
        Magic.CopyTo(file, 0);
        file[8] = Version;
        BinaryPrimitives.WriteUInt64BigEndian(file.AsSpan(9), counter);
        RandomNumberGenerator.Fill(file.AsSpan(17, 12));
        BinaryPrimitives.WriteUInt32BigEndian(file.AsSpan(29), (uint)vars.Length);
        using (var gcm = new AesGcm(key, TagSize))
        {
            gcm.Encrypt(file.AsSpan(17, 12), vars, file.AsSpan(HeaderSize, vars.Length), file.AsSpan(HeaderSize + vars.Length), Aad(file.AsSpan(0, HeaderSize)));
        }
        SecureFiles.WriteAtomic(Path, file);
    }

    private byte[] Aad(ReadOnlySpan<byte> header)
    {
        var id = Encoding.UTF8.GetBytes(VmId);
        var aad = new byte[AadLabel.Length + 4 + id.Length + HeaderSize];
        AadLabel.CopyTo(aad, 0);
        BinaryPrimitives.WriteUInt32BigEndian(aad.AsSpan(AadLabel.Length), (uint)id.Length);
        id.CopyTo(aad, AadLabel.Length + 4);
        header.CopyTo(aad.AsSpan(AadLabel.Length + 4 + id.Length));
        return aad;
    }

    private byte[] ReadFile()
    {
        try
        {
            var info = new FileInfo(Path);
            if (info.Length > HeaderSize + (long)MaxVarsSize + TagSize)
            {
                throw Format(0, $"at most {HeaderSize + MaxVarsSize + TagSize} bytes, got {info.Length}");
            }
            return File.ReadAllBytes(Path);
        }
        catch (FileNotFoundException e)
        {
            throw new VmBundleException("bundle.missing", $"no variable store at {Path}", e);
        }
    }

    private static VmBundleException Format(long offset, string expected) =>
        new("nvram.format", $"nvram.enc at offset {offset}: expected {expected}");
}

/// <summary>
/// The clear variable store of a running VM, on memory-backed storage. <see cref="Dispose"/>
/// re-encrypts it (counter + 1) only if its content changed, overwrites it with zeros, deletes it
/// and its folder, and wipes the key and the buffers.
/// </summary>
public sealed class NvramRunCopy : IDisposable
{
    private readonly NvramStore _store;
    private readonly byte[] _key;
    private readonly byte[] _original;
    private readonly ulong _counter;
    private readonly string _dir;
    private bool _closed;

    internal NvramRunCopy(NvramStore store, byte[] key, byte[] original, ulong counter, string dir, string path)
    {
        _store = store;
        _key = key;
        _original = original;
        _counter = counter;
        _dir = dir;
        Path = path;
    }

    /// <summary>The clear variable store, for <c>-drive if=pflash,format=raw,unit=1,file=…</c>.</summary>
    public string Path { get; }

    /// <summary>After <see cref="Close"/>: whether the store changed and was re-encrypted.</summary>
    public bool Changed { get; private set; }

    /// <summary>Re-encrypts (if changed) and removes the clear copy. Throws if the clear copy is gone or unreadable.</summary>
    public void Close()
    {
        if (_closed)
        {
            return;
        }
        byte[]? now = null;
        try
        {
            now = File.ReadAllBytes(Path);
            if (!now.AsSpan().SequenceEqual(_original))
            {
                _store.WriteWithKey(_key, now, _counter + 1);
                Changed = true;
            }
        }
        catch (IOException e)
        {
            throw new VmBundleException("nvram.format", $"the running copy of the variable store ({Path}) cannot be read back: {e.Message}", e);
        }
        finally
        {
            _closed = true;
            if (now is not null)
            {
                CryptographicOperations.ZeroMemory(now);
            }
            CryptographicOperations.ZeroMemory(_key);
            CryptographicOperations.ZeroMemory(_original);
            Remove();
        }
    }

    public void Dispose() => Close();

    private void Remove()
    {
        try
        {
            if (File.Exists(Path))
            {
                long len = new FileInfo(Path).Length;
                using (var f = new FileStream(Path, FileMode.Open, FileAccess.Write))
                {
                    var zeros = new byte[64 * 1024];
                    for (long done = 0; done < len; done += zeros.Length)
                    {
                        f.Write(zeros, 0, (int)Math.Min(zeros.Length, len - done));
                    }
                }
                File.Delete(Path);
            }
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

using System.Security.Cryptography;

namespace Rempart.Host.Vm;

/// <summary>
/// Files of a bundle: owner-only modes (folders 0700, files 0600) and atomic replacement
/// (write a temporary file in the same folder, fsync, rename over the target).
/// </summary>
internal static class SecureFiles
{
    public const UnixFileMode DirMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    public static void CreateDirectory(string path)
    {
        Directory.CreateDirectory(path, DirMode);
        File.SetUnixFileMode(path, DirMode);
    }

    /// <summary>Writes <paramref name="content"/> to <paramref name="path"/> atomically, mode 0600.</summary>
    public static void WriteAtomic(string path, ReadOnlySpan<byte> content)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string tmp = Path.Combine(dir, $".{Path.GetFileName(path)}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8))}.tmp");
        try
        {
            using (var f = new FileStream(tmp, new FileStreamOptions
            {
                Mode = System.IO.FileMode.CreateNew,
                Access = FileAccess.Write,
                UnixCreateMode = FileMode,
            }))
            {
                f.Write(content);
                f.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }

    /// <summary>
    /// Refuses a path whose mode grants anything to group or others — except, on a folder, the
    /// right to pass through it (x without r): while a VM runs, its user reaches its own disks and
    /// vTPM state through the bundle (rwx--x--x), and can list nothing.
    /// </summary>
    public static void CheckPrivate(string path, string what)
    {
        var mode = File.GetUnixFileMode(path);
        var others = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite;
        if (!Directory.Exists(path))
        {
            others |= UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;
        }
        if ((mode & others) != 0)
        {
            throw new VmBundleException("bundle.permissions", $"{what} ({path}) is accessible to group or others (mode {Convert.ToString((int)mode, 8)}); expected 0700 folders (0711 while the VM runs) and 0600 files");
        }
    }
}

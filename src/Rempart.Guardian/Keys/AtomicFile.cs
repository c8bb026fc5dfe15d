using System.Runtime.InteropServices;

namespace Rempart.Guardian.Keys;

/// <summary>
/// Writes a file so a crash leaves either the old content or the new, never a torn or missing file:
/// a 0600 temporary file beside it, flushed to disk, renamed over the target (rename(2) is atomic
/// within a file system), then the folder itself is flushed so the rename survives a power cut.
/// </summary>
internal static class AtomicFile
{
    private const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    public static void Write(string path, ReadOnlySpan<byte> bytes)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var temp = Path.Combine(dir, "." + Path.GetFileName(path) + "." + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(6)) + ".tmp");
        try
        {
            using (var f = new FileStream(temp, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = OwnerOnly }))
            {
                f.Write(bytes);
                f.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
        SyncDirectory(dir);
    }

    /// <summary>Creates <paramref name="dir"/> (0700) if needed.</summary>
    public static void EnsurePrivateDirectory(string dir)
    {
        if (!Directory.Exists(dir))
        {
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
    }

    private static void SyncDirectory(string dir)
    {
        const int ORdOnly = 0, ODirectory = 0x10000;
        int fd = Open(dir, ORdOnly | ODirectory);
        if (fd < 0)
        {
            return; // best effort: the file itself is already on disk
        }
        _ = Fsync(fd);
        _ = Close(fd);
    }

    [DllImport("libc", EntryPoint = "open")]
    private static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", EntryPoint = "fsync")]
    private static extern int Fsync(int fd);

    [DllImport("libc", EntryPoint = "close")]
    private static extern int Close(int fd);
}

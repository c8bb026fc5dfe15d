using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Rempart.Host.Vm;
using Rempart.KeyProtection;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Host.Tests.Vm;

/// <summary>qcow2 + LUKS disks made by real qemu-img, checked by qemu-img and by cryptsetup on the LUKS header.</summary>
public sealed class EncryptedDiskTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-disk-").FullName;
    private readonly VmMasterKey _vmk = VmTestKeys.Random();

    public void Dispose()
    {
        _vmk.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void An_imported_image_is_encrypted_aes_256_xts_and_opens_only_with_its_key()
    {
        // A 16 MiB raw image with a marker at 1 MiB and another near the end.
        string src = Path.Combine(_dir, "src.raw");
        var marker = Encoding.ASCII.GetBytes("REMPART-DISK-MARKER-" + Convert.ToHexString(RandomNumberGenerator.GetBytes(16)));
        using (var f = File.Create(src))
        {
            f.SetLength(16 << 20);
            f.Position = 1 << 20;
            f.Write(marker);
            f.Position = (16 << 20) - 4096;
            f.Write(marker);
        }
        string disk = Path.Combine(_dir, "os.qcow2");
        var seen = new List<double>();
        EncryptedDisk.Import(src, "raw", disk, _vmk, "os", new SyncProgress(seen.Add));
        // qemu-img -p prints "(0.00/100%)" first (its lines, then ours: 100 when it succeeded).
        Assert.True(seen.Count >= 3, $"progress: {string.Join(", ", seen)}");
        Assert.Equal(0, seen[0]);
        Assert.Equal(100, seen[^1]);
        Assert.True(seen.SequenceEqual(seen.Order()), "progress only goes up");

        var info = EncryptedDisk.Verify(disk);
        Assert.Equal(16L << 20, info.VirtualSize);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(disk));

        var onDisk = File.ReadAllBytes(disk);
        Assert.False(VmTestKeys.Contains(onDisk, marker), "the marker is in the qcow2 file in clear");
        var pass = EncryptedDisk.Passphrase(_vmk, "os");
        Assert.False(VmTestKeys.Contains(onDisk, pass));

        string back = Path.Combine(_dir, "back.raw");
        EncryptedDisk.ExportRaw(disk, _vmk, "os", back);
        Assert.Equal(File.ReadAllBytes(src), File.ReadAllBytes(back));

        // Wrong VMK, and the right VMK with another disk's label: both refused as disk.key.
        using var other = VmTestKeys.Random();
        Assert.Equal("disk.key", Assert.Throws<VmBundleException>(() => EncryptedDisk.ExportRaw(disk, other, "os", back + "2")).Id);
        Assert.Equal("disk.key", Assert.Throws<VmBundleException>(() => EncryptedDisk.Check(disk, _vmk, "data")).Id);
        EncryptedDisk.Check(disk, _vmk, "os");

        // cryptsetup (not QEMU) reads the LUKS header stored inside the qcow2 and unlocks its keyslot
        // with the passphrase derived from the VMK.
        string header = Path.Combine(_dir, "luks-header.img");
        File.WriteAllBytes(header, LuksHeaderOf(onDisk));
        var dump = Tool.Run("cryptsetup", ["luksDump", header]).Ok().Stdout;
        Assert.Contains("Version:       \t1", dump, StringComparison.Ordinal);
        Assert.Contains("Cipher name:   \taes", dump, StringComparison.Ordinal);
        Assert.Contains("Cipher mode:   \txts-plain64", dump, StringComparison.Ordinal);
        Assert.Contains("Hash spec:     \tsha256", dump, StringComparison.Ordinal);
        Assert.Contains("MK bits:       \t512", dump, StringComparison.Ordinal);
        Tool.Run("cryptsetup", ["open", "--test-passphrase", "--key-file=-", header], stdin: Encoding.ASCII.GetString(pass)).Ok();
        var wrong = EncryptedDisk.Passphrase(other, "os");
        Assert.NotEqual(0, Tool.Run("cryptsetup", ["open", "--test-passphrase", "--key-file=-", header], stdin: Encoding.ASCII.GetString(wrong)).ExitCode);
        CryptographicOperations.ZeroMemory(pass);
    }

    [Fact]
    public void A_missing_source_or_a_tiny_disk_is_refused_before_qemu_img_runs()
    {
        Assert.Equal("bundle.missing", Assert.Throws<VmBundleException>(() =>
            EncryptedDisk.Import(Path.Combine(_dir, "none.raw"), "raw", Path.Combine(_dir, "x.qcow2"), _vmk, "os")).Id);
        Assert.Throws<ArgumentOutOfRangeException>(() => EncryptedDisk.Create(Path.Combine(_dir, "y.qcow2"), 4096, _vmk, "os"));
        Assert.Throws<ArgumentException>(() => EncryptedDisk.Passphrase(_vmk, "../os"));
        string taken = Path.Combine(_dir, "taken.qcow2");
        File.WriteAllBytes(taken, [1]);
        Assert.Equal("bundle.exists", Assert.Throws<VmBundleException>(() => EncryptedDisk.Create(taken, 1 << 20, _vmk, "os")).Id);
        Assert.Equal([1], File.ReadAllBytes(taken));
    }

    /// <summary>
    /// The LUKS header inside a qcow2: the header extension 0x0537be77 ("full disk encryption
    /// header pointer", qcow2 spec, "Header extensions") gives its offset and length.
    /// </summary>
    private static byte[] LuksHeaderOf(byte[] qcow2)
    {
        Assert.Equal("QFI\xfb", Encoding.Latin1.GetString(qcow2, 0, 4));
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32BigEndian(qcow2.AsSpan(4)));
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32BigEndian(qcow2.AsSpan(32))); // crypt_method: LUKS
        int at = (int)BinaryPrimitives.ReadUInt32BigEndian(qcow2.AsSpan(100)); // header_length (v3)
        while (true)
        {
            uint type = BinaryPrimitives.ReadUInt32BigEndian(qcow2.AsSpan(at));
            int len = (int)BinaryPrimitives.ReadUInt32BigEndian(qcow2.AsSpan(at + 4));
            Assert.NotEqual(0u, type);
            if (type == 0x0537be77)
            {
                long offset = (long)BinaryPrimitives.ReadUInt64BigEndian(qcow2.AsSpan(at + 8));
                long length = (long)BinaryPrimitives.ReadUInt64BigEndian(qcow2.AsSpan(at + 16));
                var luks = qcow2.AsSpan((int)offset, (int)length).ToArray();
                Assert.Equal("LUKS\xba\xbe", Encoding.Latin1.GetString(luks, 0, 6));
                return luks;
            }
            at += 8 + (len + 7) / 8 * 8;
        }
    }

    private sealed class SyncProgress(Action<double> report) : IProgress<double>
    {
        public void Report(double value)
        {
            lock (report)
            {
                report(value);
            }
        }
    }
}

using System.Text;
using Rempart.Host.Vm;
using Rempart.KeyProtection;

namespace Rempart.Host.Tests.Vm;

/// <summary>A whole bundle: created, loaded strictly, nothing readable in it without the VMK.</summary>
public sealed class VmBundleTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("rempart-bundle-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public async Task Create_add_a_disk_nvram_and_vtpm_then_load()
    {
        var (kpJson, vmk) = VmTestKeys.New("vm-web-01", ShieldingLevel.EncryptionSupported);
        using (vmk)
        {
            string dir = Path.Combine(_root, "vm-web-01");
            var b = VmBundle.Create(dir, new VmSpec("web-01", 512, 2), kpJson);
            await b.AddDisksAsync([new("os", null, "qcow2", 64L << 20)], vmk);
            string image = Path.Combine(_root, "data.raw");
            File.WriteAllBytes(image, [.. "REMPART-DATA-DISK"u8, .. new byte[(2 << 20) - 17]]);
            var progress = new List<double>();
            await b.AddDisksAsync([new("data", image, "raw", 0)], vmk, (_, p) => new Progress(progress).Report(p));
            Assert.Equal(100, progress[^1]);
            b.CreateNvram(vmk);
            b.CreateVtpm(vmk);

            var loaded = VmBundle.Load(dir);
            Assert.Equal("vm-web-01", loaded.Config.VmId);
            Assert.Equal(ShieldingLevel.EncryptionSupported, loaded.Config.Shielding);
            Assert.Equal([new VmDisk("os", 64L << 20), new VmDisk("data", 2L << 20)], loaded.Config.Disks);
            Assert.Equal(kpJson, File.ReadAllBytes(Path.Combine(dir, "vm.kp")));
            Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(dir, "snapshots")));
            Assert.Equal(File.ReadAllBytes(VmBundle.TemplatePath(SecureBootTemplate.Snakeoil)), loaded.Nvram.Decrypt(vmk));
            Assert.Equal(Path.Combine(dir, "disks", "os.qcow2"), loaded.DiskPath("os"));

            // Owner-only, everywhere.
            foreach (var d in Directory.EnumerateDirectories(dir, "*", SearchOption.AllDirectories).Append(dir))
            {
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(d));
            }
            foreach (var (path, _) in VmTestKeys.Files(dir))
            {
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
            }

            // No key in any file: the VMK, the derived keys, the disk passphrase.
            var secrets = new List<byte[]> { vmk.Bytes.ToArray(), vmk.Derive(VmKeys.Nvram), vmk.Derive(VmKeys.Vtpm), vmk.Derive(VmKeys.Disk("os")), EncryptedDisk.Passphrase(vmk, "os") };
            secrets.Add(Encoding.ASCII.GetBytes(Convert.ToHexStringLower(secrets[2])));
            foreach (var (path, bytes) in VmTestKeys.Files(dir))
            {
                Assert.False(VmTestKeys.Contains(bytes, "REMPART-DATA-DISK"u8), $"{path} holds the imported data in clear");
                foreach (var s in secrets)
                {
                    Assert.False(VmTestKeys.Contains(bytes, s), $"{path} holds a key");
                }
            }

            using var stranger = VmTestKeys.Random();
            await Assert.ThrowsAsync<KeyProtectorException>(() => loaded.AddDisksAsync([new("data", null, "qcow2", 16L << 20)], stranger));
            Assert.Equal("bundle.exists", (await Assert.ThrowsAsync<VmBundleException>(() => loaded.AddDisksAsync([new("os", null, "qcow2", 16L << 20)], vmk))).Id);
            Assert.Equal("bundle.format", (await Assert.ThrowsAsync<VmBundleException>(() => loaded.AddDisksAsync([new("../x", null, "qcow2", 16L << 20)], vmk))).Id);
            Assert.Equal(2, VmBundle.Load(dir).Config.Disks.Count);
            Assert.Equal("bundle.exists", Assert.Throws<VmBundleException>(() => VmBundle.Create(dir, new VmSpec("web-01", 512, 2), kpJson)).Id);
        }
    }

    [Fact]
    public async Task AddDisksAsync_makes_the_disks_together_and_records_them_in_the_given_order()
    {
        var (kpJson, vmk) = VmTestKeys.New();
        using (vmk)
        {
            string dir = Path.Combine(_root, "vm-many");
            var b = VmBundle.Create(dir, new VmSpec("many", 256, 1), kpJson);
            string image = Path.Combine(_root, "sys.raw");
            File.WriteAllBytes(image, [.. "REMPART-SYSTEM-DISK"u8, .. new byte[(4 << 20) - 19]]);
            var seen = new System.Collections.Concurrent.ConcurrentBag<string>();
            await b.AddDisksAsync([new("system", image, "raw", 0), new("data", null, "qcow2", 16L << 20), new("logs", null, "qcow2", 8L << 20)],
                vmk, (id, _) => seen.Add(id));

            Assert.Equal([new VmDisk("system", 4L << 20), new VmDisk("data", 16L << 20), new VmDisk("logs", 8L << 20)], b.Config.Disks);
            Assert.Equal(b.Config.Disks, VmConfig.Parse(File.ReadAllBytes(Path.Combine(dir, "vm.json"))).Disks);
            Assert.Equal(["data", "logs", "system"], seen.Distinct().Order());
            foreach (var d in b.Config.Disks)
            {
                var info = EncryptedDisk.Verify(b.DiskPath(d.Id));
                Assert.Equal(d.SizeBytes, info.VirtualSize);
                Assert.True(info.Encrypted);
                Assert.False(VmTestKeys.Contains(File.ReadAllBytes(b.DiskPath(d.Id)), "REMPART-SYSTEM-DISK"u8));
            }
            Assert.Equal("bundle.exists", (await Assert.ThrowsAsync<VmBundleException>(() =>
                b.AddDisksAsync([new("extra", null, "qcow2", 1L << 20), new("extra", null, "qcow2", 1L << 20)], vmk))).Id);
            Assert.False(File.Exists(Path.Combine(dir, "disks", "extra.qcow2")));
        }
    }

    [Fact]
    public async Task AddDisksAsync_one_disk_failing_leaves_no_disk_and_vm_json_unchanged()
    {
        var (kpJson, vmk) = VmTestKeys.New();
        using (vmk)
        {
            string dir = Path.Combine(_root, "vm-fail");
            var b = VmBundle.Create(dir, new VmSpec("fail", 256, 1), kpJson);
            byte[] before = File.ReadAllBytes(Path.Combine(dir, "vm.json"));
            // A qcow2 whose header is sound (qemu-img info passes) but whose first L2 table
            // offset is not cluster-aligned: the copy fails when it reads the data.
            string broken = Path.Combine(_root, "broken.qcow2");
            Assert.Equal(0, Tool("qemu-img", "create", "-q", "-f", "qcow2", broken, "4M"));
            Assert.Equal(0, Tool("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", broken));
            using (var f = File.Open(broken, FileMode.Open, FileAccess.ReadWrite))
            {
                var header = new byte[48];
                f.ReadExactly(header);
                long l1 = System.Buffers.Binary.BinaryPrimitives.ReadInt64BigEndian(header.AsSpan(40));
                f.Position = l1;
                var entry = new byte[8];
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(entry, 0x8000_0000_0012_3400UL);
                f.Write(entry);
            }

            var e = await Assert.ThrowsAsync<VmBundleException>(() =>
                b.AddDisksAsync([new("data", null, "qcow2", 64L << 20), new("system", broken, "qcow2", 0)], vmk));
            Assert.Equal("disk.tool", e.Id);
            Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(dir, "disks")));
            Assert.Equal(before, File.ReadAllBytes(Path.Combine(dir, "vm.json")));
            Assert.Empty(b.Config.Disks);
        }
    }

    public static TheoryData<string, string> Damage => new()
    {
        { "vm.json readable by others", "bundle.permissions" },
        { "folder readable by others", "bundle.permissions" },
        { "nvram.enc missing", "bundle.missing" },
        { "vtpm state missing", "bundle.missing" },
        { "snapshots missing", "bundle.missing" },
        { "vm.kp of another VM", "bundle.format" },
        { "vm.kp not a key protector", "bundle.format" },
        { "vm.json with an unknown field", "bundle.format" },
        { "nvram.enc truncated", "nvram.format" },
    };

    [Theory]
    [MemberData(nameof(Damage))]
    public void Load_refuses_a_damaged_bundle(string damage, string id)
    {
        string dir = Skeleton();
        switch (damage)
        {
            case "vm.json readable by others": File.SetUnixFileMode(Path.Combine(dir, "vm.json"), (UnixFileMode)0b110_100_100); break;
            case "folder readable by others": File.SetUnixFileMode(dir, (UnixFileMode)0b111_101_101); break;
            case "nvram.enc missing": File.Delete(Path.Combine(dir, "nvram.enc")); break;
            case "vtpm state missing": File.Delete(Path.Combine(dir, "vtpm", "tpm2-00.permall")); break;
            case "snapshots missing": Directory.Delete(Path.Combine(dir, "snapshots")); break;
            case "vm.kp of another VM": File.WriteAllBytes(Path.Combine(dir, "vm.kp"), VmTestKeys.New("vm-other").KpJson); break;
            case "vm.kp not a key protector": File.WriteAllText(Path.Combine(dir, "vm.kp"), "{}"); break;
            case "vm.json with an unknown field":
                File.WriteAllText(Path.Combine(dir, "vm.json"), File.ReadAllText(Path.Combine(dir, "vm.json")).Replace("\"cpus\"", "\"extra\": 1, \"cpus\"", StringComparison.Ordinal));
                break;
            case "nvram.enc truncated": File.WriteAllBytes(Path.Combine(dir, "nvram.enc"), File.ReadAllBytes(Path.Combine(dir, "nvram.enc"))[..40]); break;
            default: throw new ArgumentException(damage);
        }
        Assert.Equal(id, Assert.Throws<VmBundleException>(() => VmBundle.Load(dir)).Id);
    }

    private static int Tool(string name, params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(name) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        using var p = System.Diagnostics.Process.Start(psi)!;
        p.StandardOutput.ReadToEnd();
        p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode;
    }

    private sealed class Progress(List<double> seen) : IProgress<double>
    {
        public void Report(double value)
        {
            lock (seen)
            {
                seen.Add(value);
            }
        }
    }

    /// <summary>A complete bundle without disks whose vTPM state is a stand-in file (Load checks presence and modes only).</summary>
    private string Skeleton()
    {
        var (kpJson, vmk) = VmTestKeys.New();
        using (vmk)
        {
            string dir = Path.Combine(_root, "vm-" + Guid.NewGuid().ToString("N"));
            var b = VmBundle.Create(dir, new VmSpec("test", 256, 1), kpJson);
            b.CreateNvram(vmk);
            File.WriteAllBytes(Path.Combine(dir, "vtpm", "tpm2-00.permall"), [1, 2, 3]);
            File.SetUnixFileMode(Path.Combine(dir, "vtpm", "tpm2-00.permall"), UnixFileMode.UserRead | UnixFileMode.UserWrite);
            VmBundle.Load(dir);
            return dir;
        }
    }
}

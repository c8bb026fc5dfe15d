using System.Security.Cryptography;
using Rempart.Host.Vm;
using Rempart.KeyProtection;

namespace Rempart.Host.Tests.Vm;

/// <summary>nvram.enc: AES-256-GCM at rest, strict format, a clear copy only in memory-backed storage while running.</summary>
public sealed class NvramStoreTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-nvram-").FullName;
    private readonly VmMasterKey _vmk = VmTestKeys.Random();

    public void Dispose()
    {
        _vmk.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private NvramStore Store(string vmId = "vm-test-1") => new(Path.Combine(_dir, "nvram.enc"), vmId);

    private byte[] SmallTemplate(int size = 512)
    {
        var vars = RandomNumberGenerator.GetBytes(size);
        string t = Path.Combine(_dir, $"vars-{size}.fd");
        File.WriteAllBytes(t, vars);
        return vars;
    }

    [Fact]
    public void The_snakeoil_template_is_encrypted_at_rest_and_decrypts_to_itself()
    {
        const string template = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
        var store = Store();
        store.CreateFromTemplate(_vmk, template);
        var clear = File.ReadAllBytes(template);
        var enc = File.ReadAllBytes(store.Path);
        Assert.Equal(NvramStore.HeaderSize + clear.Length + NvramStore.TagSize, enc.Length);
        Assert.Equal(1ul, store.Counter);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(store.Path));
        // The enrolled snakeoil certificate (its DER) and the variable store's firmware volume
        // signature "_FVH" are in the template, not in the encrypted file.
        var cert = System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadCertificateFromFile("/usr/share/ovmf/PkKek-1-snakeoil.pem").RawData;
        Assert.True(VmTestKeys.Contains(clear, cert[..64]));
        Assert.False(VmTestKeys.Contains(enc, cert[..64]));
        Assert.False(VmTestKeys.Contains(enc.AsSpan(NvramStore.HeaderSize), "_FVH"u8));
        var back = store.Decrypt(_vmk);
        Assert.Equal(clear, back);
        Assert.Throws<VmBundleException>(() => store.CreateFromTemplate(_vmk, template));
    }

    [Fact]
    public void Every_byte_flip_and_every_truncation_is_refused()
    {
        SmallTemplate(300);
        var store = Store();
        store.CreateFromTemplate(_vmk, Path.Combine(_dir, "vars-300.fd"));
        var good = File.ReadAllBytes(store.Path);
        var ids = new Dictionary<string, int>();
        for (int i = 0; i < good.Length; i++)
        {
            var bad = (byte[])good.Clone();
            bad[i] ^= 0x01;
            File.WriteAllBytes(store.Path, bad);
            var e = Assert.Throws<VmBundleException>(() => store.Decrypt(_vmk));
            ids[e.Id] = ids.GetValueOrDefault(e.Id) + 1;
        }
        // Magic, version, length: format; counter, nonce, ciphertext, tag: integrity (or format for a counter of 0).
        Assert.Equal(["nvram.format", "nvram.integrity"], ids.Keys.Order());
        for (int n = 0; n < good.Length; n++)
        {
            File.WriteAllBytes(store.Path, good[..n]);
            Assert.Equal("nvram.format", Assert.Throws<VmBundleException>(() => store.Decrypt(_vmk)).Id);
        }
        File.WriteAllBytes(store.Path, [.. good, 0]);
        Assert.Equal("nvram.format", Assert.Throws<VmBundleException>(() => store.Decrypt(_vmk)).Id);
        File.WriteAllBytes(store.Path, good);
        Assert.Equal(300, store.Decrypt(_vmk).Length);
    }

    [Theory]
    [InlineData("another-vm", false)]
    [InlineData("vm-test-1", true)]
    public void The_file_is_bound_to_the_vm_id_and_key(string vmId, bool sameKey)
    {
        SmallTemplate(64);
        Store().CreateFromTemplate(_vmk, Path.Combine(_dir, "vars-64.fd"));
        using var other = VmTestKeys.Random();
        var e = Assert.Throws<VmBundleException>(() => Store(vmId).Decrypt(sameKey ? other : _vmk));
        Assert.Equal("nvram.integrity", e.Id);
    }

    [Fact]
    public void A_run_copy_lives_in_dev_shm_and_is_re_encrypted_only_when_changed()
    {
        var vars = SmallTemplate(4096);
        var store = Store();
        store.CreateFromTemplate(_vmk, Path.Combine(_dir, "vars-4096.fd"));
        var before = File.ReadAllBytes(store.Path);

        string clearPath;
        using (var run = store.OpenForRun(_vmk))
        {
            clearPath = run.Path;
            Assert.StartsWith("/dev/shm/rempart-nvram-", clearPath, StringComparison.Ordinal);
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(clearPath));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.GetDirectoryName(clearPath)!));
            Assert.Equal(vars, File.ReadAllBytes(clearPath));
        }
        Assert.False(File.Exists(clearPath));
        Assert.False(Directory.Exists(Path.GetDirectoryName(clearPath)));
        Assert.Equal(before, File.ReadAllBytes(store.Path));

        var run2 = store.OpenForRun(_vmk);
        using (var f = new FileStream(run2.Path, FileMode.Open, FileAccess.Write))
        {
            f.Position = 100;
            f.Write("variable written by the firmware"u8);
        }
        run2.Dispose();
        Assert.True(run2.Changed);
        Assert.False(File.Exists(run2.Path));
        Assert.NotEqual(before, File.ReadAllBytes(store.Path));
        Assert.Equal(2ul, store.Counter);
        var now = store.Decrypt(_vmk);
        Assert.Equal("variable written by the firmware"u8.ToArray(), now[100..132]);
        Assert.Equal(vars[..100], now[..100]);
    }
}

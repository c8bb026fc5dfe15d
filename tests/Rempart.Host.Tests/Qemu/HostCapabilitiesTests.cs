using Rempart.Host.Qemu;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Host.Tests.Qemu;

public sealed class HostCapabilitiesTests : IDisposable
{
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("rempart-sysfs.");

    public void Dispose() => _root.Delete(recursive: true);

    private void Write(string relative, string text)
    {
        var path = Path.Combine(_root.FullName, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
    }

    private const string Limits = "Limit                     Soft Limit           Hard Limit           Units     \n" +
        "Max core file size        0                    unlimited            bytes     \n" +
        "Max locked memory         {0}            {1}            bytes     \n";

    [Fact]
    public void A_bare_host_offers_software_protection_only()
    {
        Write("proc/self/limits", string.Format(System.Globalization.CultureInfo.InvariantCulture, Limits, "8388608", "8388608"));
        Write("proc/self/status", "Name:\tx\nCapEff:\t0000000000000000\n");
        var caps = HostCapabilities.Detect(_root.FullName, () => true);
        Assert.Equal(new HostCapabilities(false, false, false, 8388608, false), caps);
        Assert.False(caps.CanLockMemory);
        Assert.True(caps.Supports(ConfidentialMode.None));
        Assert.False(caps.Supports(ConfidentialMode.SevSnp));
        Assert.False(caps.Supports(ConfidentialMode.Tdx));
    }

    [Fact]
    public void Sev_snp_needs_the_module_parameter_and_the_device()
    {
        Write("sys/module/kvm_amd/parameters/sev_snp", "Y\n");
        Assert.False(HostCapabilities.Detect(_root.FullName, () => true).SevSnp);
        Write("dev/sev", "");
        Write("dev/kvm", "");
        var caps = HostCapabilities.Detect(_root.FullName, () => true);
        Assert.True(caps.SevSnp && caps.KvmDevice && caps.Supports(ConfidentialMode.SevSnp));
        Write("sys/module/kvm_amd/parameters/sev_snp", "N\n");
        Assert.False(HostCapabilities.Detect(_root.FullName, () => true).SevSnp);
    }

    [Theory]
    [InlineData(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite, 993u)] // Debian: 0660 root:kvm
    [InlineData(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite, null)] // 0666: anyone may open it
    public void Qemu_is_given_the_kvm_group_when_dev_kvm_is_not_open_to_everyone(UnixFileMode mode, uint? expected)
    {
        Write("dev/kvm", "");
        File.SetUnixFileMode(Path.Combine(_root.FullName, "dev/kvm"), mode);
        Write("etc/group", "root:x:0:\nkvm:x:993:\nrempart-vm:x:994:\n");
        Assert.Equal(expected, HostCapabilities.Detect(_root.FullName, () => true).KvmGroup);
    }

    [Fact]
    public void No_kvm_device_or_no_kvm_group_gives_no_device_group()
    {
        Write("etc/group", "root:x:0:\nkvm:x:993:\n");
        Assert.Null(HostCapabilities.Detect(_root.FullName, () => true).KvmGroup); // no /dev/kvm
        Write("dev/kvm", "");
        File.SetUnixFileMode(Path.Combine(_root.FullName, "dev/kvm"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite);
        Write("etc/group", "root:x:0:\nkvmx:x:5:\nkvm:x:0:\n"); // no usable kvm group: never root's
        Assert.Null(HostCapabilities.Detect(_root.FullName, () => true).KvmGroup);
    }

    [Theory]
    [InlineData("Y\n", true)]
    [InlineData("1\n", true)]
    [InlineData("N\n", false)]
    [InlineData("0", false)]
    public void Tdx_follows_kvm_intels_parameter(string value, bool expected)
    {
        Write("sys/module/kvm_intel/parameters/tdx", value);
        Assert.Equal(expected, HostCapabilities.Detect(_root.FullName, () => true).Tdx);
    }

    [Theory]
    [InlineData("unlimited", "unlimited", "0000000000000000", true)]
    [InlineData("65536", "65536", "000001ffffffffff", true)] // root: CAP_SYS_RESOURCE
    [InlineData("65536", "65536", "0000000000000000", false)]
    [InlineData("65536", "65536", "0000000000800000", false)] // bit 23 is not CAP_SYS_RESOURCE
    [InlineData("65536", "65536", "0000000001000000", true)]
    public void Memory_is_locked_only_when_the_child_can_have_an_unlimited_memlock(string soft, string hard, string capEff, bool expected)
    {
        Write("proc/self/limits", string.Format(System.Globalization.CultureInfo.InvariantCulture, Limits, soft, hard));
        Write("proc/self/status", $"Name:\tx\nCapEff:\t{capEff}\n");
        Assert.Equal(expected, HostCapabilities.Detect(_root.FullName, () => true).CanLockMemory);
        // The capability alone is not enough: raising must really work (containers).
        Assert.Equal(expected && hard == "unlimited", HostCapabilities.Detect(_root.FullName, () => false).CanLockMemory);
    }

    [Fact]
    public void On_this_host_lock_is_chosen_only_if_prlimit_can_really_raise_the_limit()
    {
        var caps = HostCapabilities.Detect();
        var r = Tool.Run("prlimit", ["--memlock=unlimited", "--", "true"]);
        Assert.Equal(caps.MemlockHardLimit is null || r.ExitCode == 0, caps.CanLockMemory);
    }
}

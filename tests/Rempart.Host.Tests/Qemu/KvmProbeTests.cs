using Rempart.Host.Qemu;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Host.Tests.Qemu;

public sealed class KvmProbeTests
{
    [Theory]
    [InlineData("running", "", Accelerator.Kvm)]
    [InlineData("internal-error", "qemu-system-x86_64: warning: host doesn't support requested feature\nKVM internal error. Suberror: 1\nemulation failure\n", Accelerator.Tcg)]
    [InlineData(null, "qemu-system-x86_64: warning: x\nqemu-system-x86_64: System Management Mode not supported by this hypervisor.\n", Accelerator.Tcg)]
    [InlineData("shutdown", "", Accelerator.Tcg)]
    public void Decides_from_the_status_and_stderr(string? status, string stderr, Accelerator expected)
    {
        var r = KvmProbe.Decide(status, stderr);
        Assert.Equal(expected, r.Accelerator);
        if (stderr.Contains("emulation failure", StringComparison.Ordinal))
        {
            Assert.Contains("KVM internal error", r.Reason, StringComparison.Ordinal);
            Assert.Contains("emulation failure", r.Reason, StringComparison.Ordinal);
        }
        if (stderr.Contains("System Management", StringComparison.Ordinal))
        {
            Assert.Contains("System Management Mode not supported", r.Reason, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task No_dev_kvm_is_tcg_without_running_anything()
    {
        var root = Directory.CreateTempSubdirectory("rempart-nokvm.");
        try
        {
            var r = await new KvmProbe("/nonexistent/code.fd", "/nonexistent/vars.fd", "/nonexistent/qemu", root.FullName).ChooseAsync();
            Assert.Equal(new KvmProbeResult(Accelerator.Tcg, "no /dev/kvm"), r);
        }
        finally
        {
            root.Delete(true);
        }
    }

    /// <summary>On these machines /dev/kvm exists but cannot run the Secure Boot firmware: the probe must see that.</summary>
    [Fact]
    public async Task The_real_probe_agrees_with_what_qemu_does_here_and_is_cached()
    {
        var qemu = Tool.Which("qemu-system-x86_64");
        Assert.True(File.Exists(QemuBootTests.OvmfCode), "ovmf is not installed: run scripts/setup.sh");
        var probe = new KvmProbe(QemuBootTests.OvmfCode, QemuBootTests.OvmfVars, qemu);
        var first = await probe.ChooseAsync();
        Assert.Same(probe.ChooseAsync(), probe.ChooseAsync());
        Assert.Equal(first, await probe.ChooseAsync());
        if (!File.Exists("/dev/kvm"))
        {
            Assert.Equal(Accelerator.Tcg, first.Accelerator);
            return;
        }
        // Cross-check against boot-test-guest.sh's finding: run the same thing with the shell's tools.
        var direct = Tool.Run("timeout", ["4", qemu, "-nodefaults", "-no-user-config", "-machine", "q35,smm=on,accel=kvm", "-m", "128", "-display", "none",
            "-drive", $"if=pflash,format=raw,unit=0,readonly=on,file={QemuBootTests.OvmfCode}", "-S"], timeoutMs: 20_000);
        if (direct.Stderr.Contains("System Management Mode not supported", StringComparison.Ordinal))
        {
            Assert.Equal(Accelerator.Tcg, first.Accelerator);
            Assert.Contains("System Management Mode not supported", first.Reason, StringComparison.Ordinal);
        }
    }
}

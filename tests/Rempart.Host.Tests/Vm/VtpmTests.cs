using System.Security.Cryptography;
using System.Text;
using Rempart.Host.Vm;
using Rempart.KeyProtection;
using Rempart.Tpm;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Transport;

namespace Rempart.Host.Tests.Vm;

/// <summary>The vTPM: manufactured by swtpm_setup, state encrypted by swtpm with HKDF(VMK, "vtpm"), key by pipe.</summary>
public sealed class VtpmTests : IDisposable
{
    private const uint MarkerIndex = 0x01500042;
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-vtpm-").FullName;
    private readonly VmMasterKey _vmk = VmTestKeys.Random();

    public void Dispose()
    {
        _vmk.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void The_state_is_encrypted_the_ek_survives_restarts_and_a_wrong_key_is_refused()
    {
        string state = Path.Combine(_dir, "vtpm");
        VtpmState.Create(state, _vmk);
        Assert.True(File.Exists(Path.Combine(state, "tpm2-00.permall")));
        Assert.All(Directory.EnumerateFiles(state), f => Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(f)));
        Assert.Equal("bundle.exists", Assert.Throws<VmBundleException>(() => VtpmState.Create(state, _vmk)).Id);

        var marker = Encoding.ASCII.GetBytes("REMPART-VTPM-MARKER-" + Convert.ToHexString(RandomNumberGenerator.GetBytes(16)));
        byte[] ekName, ekCert;
        using (var v = VtpmProcess.Start(state, _vmk, Path.Combine(_dir, "run1"), dataSocket: true))
        using (var tpm = new TpmClient(SwtpmTransport.ConnectUnix(v.DataSocket!)))
        {
            ekCert = tpm.ReadEkCertificate()!.RawData;
            ekName = tpm.ReadPublic(PersistentEk(tpm)).Name;
            var pub = new TpmsNvPublic(MarkerIndex, TpmAlgId.Sha256, TpmaNv.OwnerWrite | TpmaNv.OwnerRead | TpmaNv.NoDa, [], (ushort)marker.Length);
            tpm.NvDefineSpace(TpmHandle.Owner, [], pub);
            tpm.NvWrite(TpmHandle.Owner, MarkerIndex, marker);
            tpm.Shutdown();
        }
        foreach (var (path, bytes) in VmTestKeys.Files(state))
        {
            Assert.False(VmTestKeys.Contains(bytes, marker), $"{path} holds the NV marker in clear");
            Assert.False(VmTestKeys.Contains(bytes, ekCert[^64..]), $"{path} holds the EK certificate in clear");
        }

        using (var v = VtpmProcess.Start(state, _vmk, Path.Combine(_dir, "run2"), dataSocket: true))
        using (var tpm = new TpmClient(SwtpmTransport.ConnectUnix(v.DataSocket!)))
        {
            Assert.Equal(ekCert, tpm.ReadEkCertificate()!.RawData);
            Assert.Equal(ekName, tpm.ReadPublic(PersistentEk(tpm)).Name);
            Assert.Equal(marker, tpm.NvRead(MarkerIndex, TpmHandle.Owner));
        }

        // QEMU's mode: the control channel only; swtpm waits for QEMU's CMD_INIT.
        int pid;
        using (var v = VtpmProcess.Start(state, _vmk, Path.Combine(_dir, "qemu-run")))
        {
            Assert.Null(v.DataSocket);
            Assert.True(File.Exists(v.ControlSocket));
            Assert.False(v.HasExited);
            pid = v.ProcessId;
        }
        // Gone (or the pid reused by something else: not this swtpm).
        string cmdline = Path.Combine("/proc", pid.ToString(System.Globalization.CultureInfo.InvariantCulture), "cmdline");
        Assert.False(File.Exists(cmdline) && File.ReadAllText(cmdline).Contains("qemu-run", StringComparison.Ordinal), "swtpm still runs");

        using var other = VmTestKeys.Random();
        var e = Assert.Throws<VmBundleException>(() => VtpmProcess.Start(state, other, Path.Combine(_dir, "run3"), dataSocket: true));
        Assert.Equal("vtpm.key", e.Id);
    }

    /// <summary>swtpm_setup makes the RSA EK persistent at 0x81010001 (TCG EK Credential Profile §2.2.1.5).</summary>
    private static uint PersistentEk(TpmClient tpm)
    {
        var handles = tpm.GetHandles(0x81000000);
        Assert.Contains(0x81010001u, handles);
        return 0x81010001;
    }
}

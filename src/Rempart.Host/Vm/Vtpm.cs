using System.Diagnostics;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Rempart.KeyProtection;
using Rempart.Tpm.Transport;

namespace Rempart.Host.Vm;

/// <summary>
/// The VM's virtual TPM state (<c>vtpm/</c>): swtpm's own state encryption, AES-256-CBC with an
/// HMAC, keyed by HKDF(VMK, "vtpm") given as 64 hex digits on a pipe (swtpm_setup
/// <c>--keyfile-fd 3 --cipher aes-256-cbc</c>, swtpm <c>--key fd=0,mode=aes-256-cbc,format=hex</c>).
/// </summary>
public static class VtpmState
{
    public const string Cipher = "aes-256-cbc";

    /// <summary>
    /// Manufactures the vTPM: EK (RSA and ECC) with certificates from swtpm's local CA, a platform
    /// certificate, the NV indexes locked, the sha256 PCR bank active.
    /// </summary>
    public static void Create(string stateDir, VmMasterKey vmk, string pcrBanks = "sha256")
    {
        SecureFiles.CreateDirectory(stateDir);
        if (Directory.EnumerateFileSystemEntries(stateDir).Any())
        {
            throw new VmBundleException("bundle.exists", $"{stateDir} already holds a vTPM state");
        }
        var key = HexKey(vmk);
        ToolProcess.Result r;
        try
        {
            r = ToolProcess.Run("swtpm_setup",
                ["--tpm2", "--tpmstate", stateDir, "--create-ek-cert", "--create-platform-cert", "--lock-nvram",
                 "--pcr-banks", pcrBanks, "--keyfile-fd", "3", "--cipher", Cipher, "--not-overwrite"],
                key, secretFd: 3, timeout: TimeSpan.FromMinutes(2));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
        if (r.ExitCode != 0 || !File.Exists(Path.Combine(stateDir, "tpm2-00.permall")))
        {
            throw new VmBundleException("vtpm.setup", $"swtpm_setup failed (exit {r.ExitCode}): {(r.Stderr + r.Stdout).Trim()}");
        }
        foreach (var f in Directory.EnumerateFiles(stateDir))
        {
            File.SetUnixFileMode(f, SecureFiles.FileMode);
        }
    }

    /// <summary>HKDF(VMK, "vtpm") as 64 lowercase hex ASCII digits; the caller wipes it.</summary>
    internal static byte[] HexKey(VmMasterKey vmk)
    {
        Span<byte> key = stackalloc byte[32];
        try
        {
            VmKeys.Derive(vmk.Bytes, VmKeys.Vtpm, key);
            return ToolProcess.Ascii(key, hex: true);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }
}

/// <summary>
/// A running swtpm for one VM: control channel on <see cref="ControlSocket"/> (QEMU's
/// <c>-chardev socket,path=…</c> + <c>-tpmdev emulator</c>), and optionally a data channel on
/// <see cref="DataSocket"/> (a TPM client without QEMU, e.g. tests or provisioning). The state key
/// goes in on swtpm's stdin and is wiped here once written. Dispose stops swtpm.
/// </summary>
public sealed class VtpmProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();

    private VtpmProcess(Process process, string control, string? data)
    {
        _process = process;
        ControlSocket = control;
        DataSocket = data;
        _process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (_stderr)
                {
                    _stderr.AppendLine(e.Data);
                }
            }
        };
        _process.BeginErrorReadLine();
    }

    public string ControlSocket { get; }

    public string? DataSocket { get; }

    public int ProcessId => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>What swtpm wrote on stderr so far.</summary>
    public string Stderr
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    /// <summary>
    /// Starts swtpm on <paramref name="stateDir"/> with sockets in <paramref name="runDir"/> (0700).
    /// <paramref name="dataSocket"/>: also listen for TPM commands on <c>runDir/swtpm.sock</c> and
    /// start the TPM (TPM2_Startup(CLEAR)) itself; without it the firmware does, through QEMU.
    /// A wrong key is <c>vtpm.key</c>.
    /// With <c>runAs</c>, swtpm runs as that user (setsid → setpriv: own session, no groups, no
    /// capabilities), the state and run folders being already its own; without, as the caller
    /// (tests, provisioning).
    /// </summary>
    public static VtpmProcess Start(string stateDir, VmMasterKey vmk, string runDir, bool dataSocket = false, TimeSpan? timeout = null,
        Qemu.UnixUser? runAs = null)
    {
        if (!File.Exists(Path.Combine(stateDir, "tpm2-00.permall")))
        {
            throw new VmBundleException("bundle.missing", $"no vTPM state in {stateDir}");
        }
        if (runAs is null)
        {
            SecureFiles.CreateDirectory(runDir);
        }
        string ctrl = Path.Combine(runDir, "swtpm-ctrl.sock");
        string? data = dataSocket ? Path.Combine(runDir, "swtpm.sock") : null;
        var args = new List<string>
        {
            "socket", "--tpm2", "--tpmstate", $"dir={stateDir},mode=0600",
            "--key", $"fd=0,mode={VtpmState.Cipher},format=hex",
            "--ctrl", $"type=unixio,path={ctrl},mode=0600",
        };
        if (data is not null)
        {
            args.AddRange(["--server", $"type=unixio,path={data},mode=0600", "--flags", "not-need-init,startup-clear"]);
        }
        else
        {
            args.Add("--terminate");
        }
        var key = VtpmState.HexKey(vmk);
        Process p;
        try
        {
            if (runAs is null)
            {
                p = ToolProcess.Start("swtpm", args, key);
            }
            else
            {
                if (runAs.Uid == 0 || runAs.Gid == 0)
                {
                    throw new VmBundleException("vtpm.start", "swtpm never runs as root for a VM");
                }
                string[] drop =
                [
                    "--", ToolProcess.Which("setpriv"), $"--reuid={runAs.Uid}", $"--regid={runAs.Gid}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all", "--", ToolProcess.Which("swtpm"),
                ];
                p = ToolProcess.Start("setsid", [.. drop, .. args], key);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
        var v = new VtpmProcess(p, ctrl, data);
        try
        {
            v.WaitReady(timeout ?? TimeSpan.FromSeconds(20));
            return v;
        }
        catch
        {
            v.Dispose();
            throw;
        }
    }

    private void WaitReady(TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        string wait = DataSocket ?? ControlSocket;
        while (sw.Elapsed < timeout)
        {
            if (_process.HasExited)
            {
                _process.WaitForExit();
                string err = Stderr.Trim();
                bool key = err.Contains("HMAC", StringComparison.Ordinal) || err.Contains("decrypt", StringComparison.OrdinalIgnoreCase)
                    || err.Contains("Could not initialize libtpms", StringComparison.Ordinal);
                throw new VmBundleException(key ? "vtpm.key" : "vtpm.start",
                    key ? $"swtpm cannot open the vTPM state: the key does not match ({err.Split('\n')[0]})" : $"swtpm exited with {_process.ExitCode}: {err}");
            }
            // Probe only the data socket: a connection that drops on the control socket can end swtpm (--terminate).
            if (File.Exists(wait) && (DataSocket is null || (CanConnect(wait) && ControlAnswers())))
            {
                return;
            }
            Thread.Sleep(20);
        }
        throw new VmBundleException("vtpm.start", $"swtpm did not open {wait} within {timeout.TotalSeconds:0} s");
    }

    /// <summary>
    /// With a data socket swtpm opens its sockets, then loads (decrypts) the state, then serves the
    /// control channel: an answer there means the key opened the state.
    /// </summary>
    private bool ControlAnswers()
    {
        try
        {
            using var c = SwtpmControl.ConnectUnix(ControlSocket);
            c.GetCapability();
            return true;
        }
        catch (Exception e) when (e is TpmTransportException or IOException or SocketException)
        {
            return false;
        }
    }

    private static bool CanConnect(string path)
    {
        try
        {
            using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            s.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>
    /// Stops swtpm: with a data socket, CMD_SHUTDOWN on the control channel first (swtpm saves its
    /// state and exits); under QEMU swtpm ends by itself when QEMU closes the control channel
    /// (<c>--terminate</c>). Whatever is still running after that is killed.
    /// </summary>
    public void Dispose()
    {
        try
        {
            if (DataSocket is not null && !_process.HasExited)
            {
                try
                {
                    using var c = SwtpmControl.ConnectUnix(ControlSocket);
                    c.Shutdown();
                }
                catch (Exception e) when (e is TpmTransportException or IOException or SocketException)
                {
                }
                _process.WaitForExit(2000);
            }
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
        }
        _process.Dispose();
    }
}

using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Rempart.Tpm.Transport;

namespace Rempart.Tpm.Tests.Infrastructure;

/// <summary>
/// A real swtpm (libtpms) for one test class: manufactured by swtpm_setup with RSA and ECC
/// EKs and EK certificates from swtpm's local CA, in its own state folder, listening on free
/// loopback ports (data on PORT, control on PORT+1 as tpm2-tools' swtpm TCTI expects).
/// </summary>
public sealed class Swtpm : IDisposable
{
    private readonly Process _process;

    public Swtpm(string banks = "sha1,sha256,sha384")
    {
        StateDir = Directory.CreateTempSubdirectory("rempart-swtpm-").FullName;
        Tool.Run("swtpm_setup", ["--tpm2", "--tpmstate", StateDir, "--create-ek-cert", "--pcr-banks", banks, "--overwrite"]).Ok();
        Port = FreePortPair();
        var psi = new ProcessStartInfo(Tool.Which("swtpm"))
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (var a in new[] { "socket", "--tpm2", "--tpmstate", $"dir={StateDir}",
                     "--server", $"type=tcp,port={Port},bindaddr=127.0.0.1",
                     "--ctrl", $"type=tcp,port={Port + 1},bindaddr=127.0.0.1",
                     "--flags", "not-need-init,startup-clear" })
        {
            psi.ArgumentList.Add(a);
        }
        _process = Process.Start(psi)!;
        WaitForPort(Port);
    }

    public string StateDir { get; }

    public int Port { get; }

    /// <summary>Our TPM address syntax.</summary>
    public string Address => $"swtpm:tcp:127.0.0.1:{Port}";

    /// <summary>tpm2-tools' TCTI configuration for this TPM.</summary>
    public string Tcti => $"swtpm:host=127.0.0.1,port={Port}";

    public Dictionary<string, string> ToolEnv => new() { ["TPM2TOOLS_TCTI"] = Tcti };

    /// <summary>A client on a TPM with no transient objects or sessions left by earlier clients.</summary>
    public TpmClient Client()
    {
        FlushAll();
        return RawClient();
    }

    public TpmClient RawClient() => new(SwtpmTransport.ConnectTcp("127.0.0.1", Port));

    /// <summary>
    /// Runs a tpm2-tools command against this TPM. There is no resource manager in front of
    /// swtpm and libtpms holds only three transient objects, so transient objects and
    /// sessions left by earlier commands are flushed first.
    /// </summary>
    public Tool.Result Tpm2(string tool, params string[] args)
    {
        FlushAll();
        return Tool.Run(tool, args, ToolEnv);
    }

    /// <summary>Flushes every transient object and loaded session.</summary>
    public void FlushAll()
    {
        using var c = RawClient();
        foreach (uint first in new[] { 0x80000000u, 0x02000000u, 0x03000000u })
        {
            foreach (var h in c.GetHandles(first))
            {
                c.FlushContext(h);
            }
        }
    }

    private static int FreePortPair()
    {
        for (int attempt = 0; attempt < 50; attempt++)
        {
            using var l = new TcpListener(IPAddress.Loopback, 0);
            l.Start();
            int p = ((IPEndPoint)l.LocalEndpoint).Port;
            l.Stop();
            if (p >= 65534)
            {
                continue;
            }
            try
            {
                using var l2 = new TcpListener(IPAddress.Loopback, p + 1);
                l2.Start();
                l2.Stop();
                return p;
            }
            catch (SocketException)
            {
            }
        }
        throw new InvalidOperationException("no free pair of loopback ports");
    }

    private void WaitForPort(int port)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"swtpm exited with {_process.ExitCode}: {_process.StandardError.ReadToEnd()}");
            }
            try
            {
                using var c = new TcpClient();
                c.Connect(IPAddress.Loopback, port);
                return;
            }
            catch (SocketException)
            {
                Thread.Sleep(50);
            }
        }
        throw new TimeoutException($"swtpm did not listen on {port}");
    }

    public void Dispose()
    {
        try
        {
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
        try
        {
            Directory.Delete(StateDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Rempart.Host.Qemu;

/// <summary>QEMU did not start, or a running VM could not be found again; <see cref="Id"/> names why.</summary>
public sealed class QemuProcessException(string id, string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary><c>qemu.start.exited</c>, <c>qemu.start.timeout</c>, <c>qemu.reattach.pidfile</c>, <c>qemu.reattach.gone</c>, <c>qemu.reattach.other-process</c>, <c>qemu.reattach.qmp</c>.</summary>
    public string Id { get; } = id;
}

/// <summary>
/// A running VM's QEMU: started from a <see cref="QemuInvocation"/> (prlimit → setsid → setpriv →
/// QEMU, so: core limit 0, its own session, an unprivileged uid without capabilities, and the
/// sandbox), or found again after an agent restart with <see cref="ReattachAsync"/>.
/// QEMU is not <c>-daemonize</c>d (the sandbox forbids its fork); it survives the agent because
/// it is in its own session and the agent never kills it on exit — disposing this object only
/// closes the QMP connection. (Under systemd the agent's unit needs <c>KillMode=process</c>, or
/// QEMU its own scope, or stopping the agent stops the VMs.)
/// </summary>
public sealed class QemuProcess : IAsyncDisposable
{
    private readonly Process? _launcher;
    private readonly QmpClient _client;

    private System.Text.StringBuilder? _output;

    /// <summary>What QEMU wrote on stdout/stderr (first 16 KiB), when this object started it; "" after a reattach.</summary>
    public string Output
    {
        get
        {
            if (_output is null)
            {
                return "";
            }
            lock (_output)
            {
                return _output.ToString().Trim();
            }
        }
    }

    private QemuProcess(int pid, string qmpSocket, string pidFile, QmpClient client, QmpAllowlist allowlist, Process? launcher)
    {
        Pid = pid;
        QmpSocket = qmpSocket;
        PidFile = pidFile;
        _client = client;
        _launcher = launcher;
        Qmp = new GuardedQmp(client, allowlist);
    }

    public int Pid { get; }

    public string QmpSocket { get; }

    public string PidFile { get; }

    /// <summary>The VM's QMP, through the allowlist.</summary>
    public GuardedQmp Qmp { get; }

    /// <summary>The process exists and is not a zombie.</summary>
    public bool IsRunning => Alive(Pid);

    /// <summary>Starts QEMU and connects to its QMP (the guest is paused: <c>-S</c>).</summary>
    public static async Task<QemuProcess> StartAsync(QemuInvocation invocation, QemuLaunchSpec spec, QmpAllowlist allowlist, TimeSpan timeout, CancellationToken ct = default)
    {
        foreach (var stale in new[] { spec.QmpSocket, spec.PidFile })
        {
            File.Delete(stale);
        }
        var psi = new ProcessStartInfo(invocation.Argv[0])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = "/",
        };
        foreach (var a in invocation.Argv.Skip(1))
        {
            psi.ArgumentList.Add(a);
        }
        psi.Environment.Clear();
        psi.Environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin";
        var launcher = Process.Start(psi) ?? throw new QemuProcessException("qemu.start.exited", "could not start " + invocation.Argv[0]);
        launcher.StandardInput.Close();
        var output = new StringBuilder();
        void Collect(object? _, DataReceivedEventArgs e)
        {
            if (e.Data is null)
            {
                return;
            }
            lock (output)
            {
                if (output.Length < 16 * 1024)
                {
                    output.AppendLine(e.Data);
                }
            }
        }
        launcher.OutputDataReceived += Collect;
        launcher.ErrorDataReceived += Collect;
        launcher.BeginOutputReadLine();
        launcher.BeginErrorReadLine();
        string Output()
        {
            lock (output)
            {
                return output.ToString().Trim();
            }
        }

        var deadline = Stopwatch.StartNew();
        while (!(File.Exists(spec.PidFile) && File.Exists(spec.QmpSocket)))
        {
            if (launcher.HasExited)
            {
                launcher.WaitForExit(2000); // with a timeout: does not wait for the output pipes' end
                throw new QemuProcessException("qemu.start.exited", $"QEMU exited with status {launcher.ExitCode} before opening QMP: {Output()}");
            }
            if (deadline.Elapsed > timeout)
            {
                launcher.Kill();
                throw new QemuProcessException("qemu.start.timeout", $"QEMU did not open QMP within {timeout.TotalSeconds:0} s: {Output()}");
            }
            await Task.Delay(50, ct).ConfigureAwait(false);
        }
        try
        {
            var pid = ReadPid(spec.PidFile);
            if (pid != launcher.Id)
            {
                throw new QemuProcessException("qemu.start.pid", $"QEMU's pid file says {pid}, the launcher was {launcher.Id}: a wrapper forked");
            }
            var client = await QmpClient.ConnectAsync(spec.QmpSocket, timeout - deadline.Elapsed, ct).ConfigureAwait(false);
            return new QemuProcess(pid, spec.QmpSocket, spec.PidFile, client, allowlist, launcher) { _output = output };
        }
        catch (Exception ex) when (ex is not QemuProcessException)
        {
            launcher.Kill();
            throw new QemuProcessException("qemu.start.qmp", $"QEMU's QMP did not answer: {ex.Message} {Output()}", ex);
        }
        catch
        {
            launcher.Kill();
            throw;
        }
    }

    /// <summary>
    /// Finds a VM started by an earlier agent: the pid file's process must be alive and be the
    /// QEMU whose command line names this QMP socket and pid file (not a recycled pid).
    /// </summary>
    public static async Task<QemuProcess> ReattachAsync(string qmpSocket, string pidFile, QmpAllowlist allowlist, TimeSpan timeout, CancellationToken ct = default)
    {
        int pid;
        try
        {
            pid = ReadPid(pidFile);
        }
        catch (Exception ex) when (ex is IOException or FormatException or UnauthorizedAccessException)
        {
            throw new QemuProcessException("qemu.reattach.pidfile", $"no readable pid in {pidFile}", ex);
        }
        if (!Alive(pid))
        {
            throw new QemuProcessException("qemu.reattach.gone", $"QEMU (pid {pid}) is no longer running");
        }
        string[] argv;
        try
        {
            argv = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0');
        }
        catch (IOException ex)
        {
            throw new QemuProcessException("qemu.reattach.gone", $"QEMU (pid {pid}) is no longer running", ex);
        }
        if (!Follows(argv, "-qmp", $"unix:{qmpSocket},server=on,wait=off") || !Follows(argv, "-pidfile", pidFile))
        {
            throw new QemuProcessException("qemu.reattach.other-process", $"pid {pid} is not the QEMU of {qmpSocket}");
        }
        try
        {
            var client = await QmpClient.ConnectAsync(qmpSocket, timeout, ct).ConfigureAwait(false);
            return new QemuProcess(pid, qmpSocket, pidFile, client, allowlist, null);
        }
        catch (Exception ex) when (ex is TimeoutException or QmpProtocolException or IOException or System.Net.Sockets.SocketException)
        {
            throw new QemuProcessException("qemu.reattach.qmp", $"QEMU (pid {pid}) does not answer on {qmpSocket}: {ex.Message}", ex);
        }
    }

    /// <summary>Waits until QEMU is gone; false on timeout (<see cref="Timeout.InfiniteTimeSpan"/>: none).</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout, CancellationToken ct = default)
    {
        var clock = Stopwatch.StartNew();
        while (IsRunning)
        {
            if (timeout != Timeout.InfiniteTimeSpan && clock.Elapsed > timeout)
            {
                return false;
            }
            await Task.Delay(100, ct).ConfigureAwait(false);
        }
        return true;
    }

    /// <summary>SIGKILL, for a QEMU that does not answer <c>quit</c>.</summary>
    public void Kill()
    {
        if (!IsRunning)
        {
            return;
        }
        try
        {
            using var p = Process.GetProcessById(Pid);
            p.Kill();
        }
        catch (ArgumentException)
        {
            // already gone
        }
    }

    /// <summary>Closes the QMP connection; the VM keeps running.</summary>
    public async ValueTask DisposeAsync()
    {
        await _client.DisposeAsync().ConfigureAwait(false);
        _launcher?.Dispose();
    }

    private static int ReadPid(string pidFile)
    {
        var text = File.ReadAllText(pidFile).Trim();
        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && pid > 1
            ? pid
            : throw new FormatException("the pid file does not hold a pid");
    }

    private static bool Follows(string[] argv, string option, string value)
    {
        for (var i = 0; i + 1 < argv.Length; i++)
        {
            if (argv[i] == option && argv[i + 1] == value)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>/proc/PID/stat's state is not Z (zombie) or X (dead).</summary>
    internal static bool Alive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] is not ('Z' or 'X');
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}

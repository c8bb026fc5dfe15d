using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace Rempart.LoadGen;

/// <summary>
/// The real Guardian, run as its own process exactly as an operator runs it:
/// <c>rempart-guardian serve --data DIR --listen 127.0.0.1:PORT --trusted-ek-cas DIR --rate-limit 0 [--postgres CONN]</c>,
/// its key secret in REMPART_GUARDIAN_SECRET. Started through <c>scripts/rempart-guardian</c> (which
/// builds it, Release, when stale) or from a given <c>rempart-guardian.dll</c>. The TLS fingerprint
/// and address are read from what it prints at start; the admin token from DATA/admin-token.
/// </summary>
public sealed partial class GuardianProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly Queue<string> _lastLines = new();

    private GuardianProcess(Process process, string dataDir)
    {
        _process = process;
        DataDir = dataDir;
    }

    public string DataDir { get; }

    public Uri Url { get; private set; } = null!;

    public string Fingerprint { get; private set; } = "";

    public string AdminToken { get; private set; } = "";

    public int ProcessId => _process.Id;

    /// <summary>The Guardian process's CPU time so far (all its threads).</summary>
    public TimeSpan CpuTime
    {
        get
        {
            _process.Refresh();
            return _process.TotalProcessorTime;
        }
    }

    /// <param name="guardianDll">A built rempart-guardian.dll, or null for scripts/rempart-guardian.</param>
    /// <param name="dataDir">The Guardian's --data folder.</param>
    /// <param name="trustedEkCaDir">Its --trusted-ek-cas folder.</param>
    /// <param name="postgres">A PostgreSQL connection string, or null for SQLite in the data folder.</param>
    /// <param name="timeout">How long to wait for it to listen (a first start may build it).</param>
    /// <param name="extraArguments">More <c>serve</c> options (e.g. <c>--key-provider pkcs11 …</c>), or null.</param>
    public static async Task<GuardianProcess> StartAsync(string? guardianDll, string dataDir, string trustedEkCaDir, string? postgres, TimeSpan timeout,
        IReadOnlyList<string>? extraArguments = null)
    {
        int port = FreePort();
        var psi = guardianDll is null
            ? new ProcessStartInfo(Path.Combine(RepoPaths.Root, "scripts", "rempart-guardian"))
            : new ProcessStartInfo("dotnet") { ArgumentList = { guardianDll } };
        foreach (var a in new[] { "serve", "--data", dataDir, "--listen", $"127.0.0.1:{port}", "--trusted-ek-cas", trustedEkCaDir, "--rate-limit", "0" })
        {
            psi.ArgumentList.Add(a);
        }
        if (postgres is not null)
        {
            psi.ArgumentList.Add("--postgres");
            psi.ArgumentList.Add(postgres);
        }
        foreach (var a in extraArguments ?? [])
        {
            psi.ArgumentList.Add(a);
        }
        psi.UseShellExecute = false;
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.WorkingDirectory = RepoPaths.Root;
        psi.Environment["REMPART_GUARDIAN_SECRET"] = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));

        var process = Process.Start(psi) ?? throw new InvalidOperationException("the Guardian process did not start");
        var g = new GuardianProcess(process, dataDir);
        var listening = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnLine(string? line)
        {
            if (line is null)
            {
                return;
            }
            lock (g._lastLines)
            {
                g._lastLines.Enqueue(line);
                if (g._lastLines.Count > 40)
                {
                    g._lastLines.Dequeue();
                }
            }
            if (FingerprintLine().Match(line) is { Success: true } f)
            {
                g.Fingerprint = f.Groups[1].Value;
            }
            if (ListeningLine().Match(line) is { Success: true } l)
            {
                listening.TrySetResult(new Uri(l.Groups[1].Value + "/"));
            }
        }
        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        var exited = process.WaitForExitAsync();
        var first = await Task.WhenAny(listening.Task, exited, Task.Delay(timeout));
        if (first != listening.Task)
        {
            var why = first == exited ? $"exited with code {process.ExitCode}" : $"did not listen within {timeout.TotalSeconds:0} s";
            var output = g.LastOutput();
            await g.DisposeAsync();
            throw new InvalidOperationException($"the Guardian {why}:\n{output}");
        }
        g.Url = await listening.Task;
        if (g.Fingerprint.Length != 64)
        {
            await g.DisposeAsync();
            throw new InvalidOperationException("the Guardian did not print its TLS certificate fingerprint");
        }
        g.AdminToken = (await File.ReadAllTextAsync(Path.Combine(dataDir, "admin-token"))).Trim();
        return g;
    }

    public string LastOutput()
    {
        lock (_lastLines)
        {
            return string.Join('\n', _lastLines);
        }
    }

    /// <summary>Stops the Guardian as an operator would (SIGTERM), killing it only when it does not stop.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            using (var kill = Process.Start(new ProcessStartInfo("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]) { UseShellExecute = false }))
            {
                await kill!.WaitForExitAsync();
            }
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            try
            {
                await _process.WaitForExitAsync(wait.Token);
            }
            catch (OperationCanceledException)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
            }
        }
        _process.Dispose();
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    [GeneratedRegex(@"fingerprint ([0-9a-f]{64})")]
    private static partial Regex FingerprintLine();

    [GeneratedRegex(@"listening on (https://\S+)")]
    private static partial Regex ListeningLine();
}

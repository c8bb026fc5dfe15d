using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;

namespace Rempart.Host.Qemu;

/// <summary>The probe's choice and why.</summary>
public sealed record KvmProbeResult(Accelerator Accelerator, string Reason);

/// <summary>
/// Decides KVM or TCG by trying: QEMU runs the VMs' own Secure Boot firmware (q35, SMM, secure
/// pflash) under <c>-accel kvm</c> for a moment, then QMP's <c>query-status</c> must say
/// <c>running</c>. On hosts where /dev/kvm exists but cannot run it, QEMU either refuses at once
/// (<c>System Management Mode not supported by this hypervisor</c>) or stops the guest with
/// <c>KVM internal error … emulation failure</c> (status <c>internal-error</c>); both choose TCG.
/// The first answer is kept for the life of the object.
/// </summary>
public sealed class KvmProbe(string firmwareCode, string firmwareVarsTemplate, string qemu = "/usr/bin/qemu-system-x86_64", string root = "/")
{
    private readonly Lock _lock = new();
    private Task<KvmProbeResult>? _result;

    /// <summary>How long the firmware runs before the status is read.</summary>
    public TimeSpan RunFor { get; init; } = TimeSpan.FromSeconds(1.5);

    public Task<KvmProbeResult> ChooseAsync(CancellationToken ct = default)
    {
        lock (_lock)
        {
            return _result ??= ProbeAsync(ct);
        }
    }

    private async Task<KvmProbeResult> ProbeAsync(CancellationToken ct)
    {
        if (!Path.Exists(Path.Combine(root, "dev/kvm")))
        {
            return new KvmProbeResult(Accelerator.Tcg, "no /dev/kvm");
        }
        var dir = Directory.CreateTempSubdirectory("rempart-kvm-probe.");
        try
        {
            var vars = Path.Combine(dir.FullName, "vars.fd");
            File.Copy(firmwareVarsTemplate, vars);
            var psi = new ProcessStartInfo(qemu)
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var a in new[]
            {
                "-nodefaults", "-no-user-config", "-machine", "q35,smm=on,accel=kvm", "-global", "driver=cfi.pflash01,property=secure,value=on",
                "-drive", $"if=pflash,format=raw,unit=0,readonly=on,file={firmwareCode}", "-drive", $"if=pflash,format=raw,unit=1,file={vars}",
                "-m", "128", "-display", "none", "-vga", "none", "-nic", "none", "-qmp", "stdio", "-sandbox", QemuCommandLine.Sandbox,
            })
            {
                psi.ArgumentList.Add(a);
            }
            using var p = Process.Start(psi) ?? throw new InvalidOperationException("could not start " + qemu);
            var stderr = new StringBuilder();
            p.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is not null)
                {
                    lock (stderr)
                    {
                        stderr.AppendLine(e.Data);
                    }
                }
            };
            p.BeginErrorReadLine();
            string? status = null;
            try
            {
                await using var qmp = await QmpClient.OpenAsync(p.StandardOutput.BaseStream, p.StandardInput.BaseStream, TimeSpan.FromSeconds(10), null, ct).ConfigureAwait(false);
                await Task.Delay(RunFor, ct).ConfigureAwait(false);
                var r = await qmp.ExecuteAsync("query-status", (JsonObject?)null, TimeSpan.FromSeconds(10), ct).ConfigureAwait(false);
                status = r?["status"]?.GetValue<string>();
                try
                {
                    await qmp.ExecuteAsync("quit", (JsonObject?)null, TimeSpan.FromSeconds(5), ct).ConfigureAwait(false);
                }
                catch (QmpProtocolException)
                {
                    // QEMU closes the connection as it quits.
                }
            }
            catch (Exception ex) when (ex is QmpProtocolException or TimeoutException or IOException)
            {
                status = null;
            }
            finally
            {
                if (!p.WaitForExit(5000))
                {
                    p.Kill();
                }
                p.WaitForExit();
            }
            string text;
            lock (stderr)
            {
                text = stderr.ToString();
            }
            return Decide(status, text);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    /// <summary>The decision from the status QMP reported (null: QEMU was gone) and QEMU's stderr.</summary>
    internal static KvmProbeResult Decide(string? status, string stderr)
    {
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var why = lines.FirstOrDefault(l => l.Contains("KVM internal error", StringComparison.Ordinal))
            ?? lines.FirstOrDefault(l => !l.Contains("warning:", StringComparison.Ordinal))
            ?? "no message";
        if (lines.Any(l => l.Contains("emulation failure", StringComparison.Ordinal)))
        {
            why += " (emulation failure)";
        }
        return status switch
        {
            "running" => new KvmProbeResult(Accelerator.Kvm, "KVM ran the Secure Boot firmware"),
            null => new KvmProbeResult(Accelerator.Tcg, "QEMU refused KVM: " + why),
            _ => new KvmProbeResult(Accelerator.Tcg, $"KVM stopped the firmware ({status}): {why}"),
        };
    }
}

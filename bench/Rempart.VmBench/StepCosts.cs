using System.Diagnostics;
using Rempart.Host.Qemu;
using Rempart.Host.Vm;
using Rempart.KeyProtection;

namespace Rempart.VmBench;

/// <summary>
/// Steps of <c>vm start</c> timed alone, the way <see cref="Rempart.Host.Agent.VmManager"/> calls
/// them, to split the segments a start's progress lines cannot (median of 5 unless said): the
/// release with the Guardian's own share (its /metrics), attestation (not on the start path: the
/// agent attests every period), NVRAM decryption, and the host probes the start path runs.
/// </summary>
public static class StepCosts
{
    public static async Task MeasureAsync(Rig rig, string bundleDir, string kp, VmMasterKey vmk, Report report)
    {
        var release = new List<double>();
        var guardian = new List<double>();
        for (int i = 0; i < 5; i++)
        {
            var (sum0, n0) = await rig.GuardianReleaseTimeAsync();
            long t0 = Stopwatch.GetTimestamp();
            var (key, _) = await rig.Agent.ReleaseAsync(kp, CancellationToken.None);
            release.Add(Clock.Ms(t0, Stopwatch.GetTimestamp()));
            key.Dispose();
            var (sum1, n1) = await rig.GuardianReleaseTimeAsync();
            if (n1 == n0 + 1)
            {
                guardian.Add((sum1 - sum0) * 1000);
            }
        }
        report.Step("release (agent: Guardian round trip + TPM recovery + KP MAC)", release);
        report.Step("  of which the Guardian's server-side time (/metrics)", guardian);
        report.Step("  of which HTTP client + key recovery in the host TPM (difference)", [.. release.Zip(guardian, (a, b) => a - b)]);
        report.Step("attestation (quote + binding key; periodic, NOT on the start path)", await TimesAsync(3, () => rig.Agent.AttestOnceAsync(CancellationToken.None)));

        var bundle = VmBundle.Load(bundleDir);
        report.Step("NVRAM decrypt into /dev/shm + wipe (OpenForRun + Close, unchanged)", await TimesAsync(5, () =>
        {
            using var copy = bundle.Nvram.OpenForRun(vmk);
            copy.Close();
            return Task.CompletedTask;
        }));
        report.Step("HostCapabilities.Detect() (runs prlimit --memlock=unlimited -- true)", await TimesAsync(5, () =>
        {
            HostCapabilities.Detect();
            return Task.CompletedTask;
        }));
        report.Step("qemu-system-x86_64 --version (on every start)", await TimesAsync(5, async () =>
        {
            using var p = Process.Start(new ProcessStartInfo("/usr/bin/qemu-system-x86_64", "--version") { RedirectStandardOutput = true, UseShellExecute = false })!;
            await p.StandardOutput.ReadToEndAsync();
            await p.WaitForExitAsync();
        }));
        report.Step("KVM probe, uncached (first start of an agent only)", await TimesAsync(1, () =>
            new KvmProbe(PlainVm.FirmwareCode, VmBundle.TemplatePath(SecureBootTemplate.Snakeoil)).ChooseAsync()));
    }

    private static async Task<List<double>> TimesAsync(int n, Func<Task> step)
    {
        var times = new List<double>();
        for (int i = 0; i < n; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            await step();
            times.Add(Clock.Ms(t0, Stopwatch.GetTimestamp()));
        }
        return times;
    }
}

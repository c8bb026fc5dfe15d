using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Rempart.LoadGen;

/// <summary>A software host the Guardian enrolled and approved.</summary>
public sealed record EnrolledHost(string HostId, SoftwareTpm Tpm);

/// <summary>
/// The simulated fleet: software TPMs made once (key generation is the slow part) and enrolled
/// into a Guardian through its normal API — POST /v1/enrolments, the software ActivateCredential,
/// POST /v1/enrolments/{id}/activate — then approved into a host group by the admin API.
/// </summary>
public static class Fleet
{
    /// <summary>Makes <paramref name="count"/> software TPMs on all cores.</summary>
    public static IReadOnlyList<SoftwareTpm> Make(int count, SoftwareEkCa ca, SimulatedBoot boot, TextWriter progress)
    {
        var tpms = new SoftwareTpm[count];
        int done = 0;
        var sw = Stopwatch.StartNew();
        Parallel.For(0, count, i =>
        {
            tpms[i] = new SoftwareTpm(ca, boot);
            int n = Interlocked.Increment(ref done);
            if (n % Math.Max(1, count / 10) == 0 || n == count)
            {
                progress.WriteLine($"  software TPMs: {n}/{count} ({sw.Elapsed.TotalSeconds:0.0} s)");
            }
        });
        return tpms;
    }

    /// <summary>
    /// Creates the host group and its policy, then enrols and approves every TPM,
    /// <paramref name="parallelism"/> at a time. Any refusal stops the run: it is a finding.
    /// </summary>
    public static async Task<IReadOnlyList<EnrolledHost>> EnrolAsync(GuardianHttp http, GuardianHttp admin, IReadOnlyList<SoftwareTpm> tpms,
        string group, string policyDocument, int parallelism, TextWriter progress, CancellationToken ct)
    {
        await admin.AdminPostAsync("v1/hostgroups", new JsonObject { ["name"] = group, ["description"] = "load generator (software TPMs)" }, ct);
        var policy = await admin.AdminPostAsync("v1/policies", new JsonObject { ["document"] = policyDocument }, ct);
        await admin.AdminPostAsync($"v1/hostgroups/{group}/policy", new JsonObject { ["policyId"] = policy["id"]!.GetValue<string>() }, ct);

        var hosts = new EnrolledHost[tpms.Count];
        int done = 0;
        var sw = Stopwatch.StartNew();
        await Parallel.ForEachAsync(Enumerable.Range(0, tpms.Count), new ParallelOptions { MaxDegreeOfParallelism = parallelism, CancellationToken = ct }, async (i, token) =>
        {
            var tpm = tpms[i];
            var challenge = await http.StartEnrolmentAsync(tpm.EnrolmentRequest($"loadgen-{i:D5}"), token);
            var result = await http.ActivateAsync(challenge.EnrolmentId, tpm.Answer(challenge), token);
            await admin.AdminPostAsync($"v1/hosts/{result.HostId}/approve", new JsonObject { ["group"] = group }, token);
            hosts[i] = new EnrolledHost(result.HostId, tpm);
            int n = Interlocked.Increment(ref done);
            if (n % Math.Max(1, tpms.Count / 10) == 0 || n == tpms.Count)
            {
                progress.WriteLine($"  enrolled and approved: {n}/{tpms.Count} ({n / sw.Elapsed.TotalSeconds:0} hosts/s)");
            }
        });
        return hosts;
    }

    /// <summary>
    /// The default policy for a boot: Secure Boot required, and PCR 7 (Secure Boot state and
    /// authorities) equal to the value this boot's log replays to — a baseline an operator would
    /// capture from a reference host. Evaluated in full on every attestation.
    /// </summary>
    public static string DefaultPolicy(SimulatedBoot boot) => $"""
        id: loadgen
        version: 1
        mode: enforce
        description: load generator fleet (software TPMs booted from one firmware log)
        rules:
          - name: secure-boot
            description: UEFI Secure Boot was on
            secureBoot:
              required: true
          - name: pcr7-baseline
            description: Secure Boot configuration as on the reference boot
            pcr:
              bank: sha256
              index: 7
              equals: {Convert.ToHexStringLower(boot.Value(Rempart.Tpm.TpmAlgId.Sha256, 7)!)}
        """;
}

using Rempart.Tpm;

namespace Rempart.Attestation.Policy;

/// <summary>
/// Captures a policy from a reference host's verified evidence, for an operator to review and
/// edit: PCRs 0-7 of every quoted bank equal to their values; Secure Boot required (with db
/// limited to its current entries and dbx containing its current entries) when it was on; the boot
/// applications' digests as an allow-list; the kernel command line. Only verified claims whose data
/// is evidence are captured: a command line whose digest does not cover it is left out.
/// </summary>
public static class PolicyBaseline
{
    private const string Captured = "captured from a reference host";

    private static readonly TpmAlgId[] BankPreference = [TpmAlgId.Sha256, TpmAlgId.Sha384, TpmAlgId.Sha512, TpmAlgId.Sha1];

    public static PolicyDocument Capture(PolicyClaims claims, string id)
    {
        ArgumentNullException.ThrowIfNull(claims);
        ArgumentException.ThrowIfNullOrEmpty(id);
        var rules = new List<PolicyRule>();
        foreach (var (bank, values) in claims.Pcrs.OrderBy(b => Array.IndexOf(BankPreference, b.Key)))
        {
            string name = TpmHash.ToName(bank);
            foreach (var (pcr, value) in values.Where(p => p.Key is >= 0 and <= 7).OrderBy(p => p.Key))
            {
                rules.Add(new PcrRule($"pcr-{name}-{pcr}", $"PCR {name}:{pcr} {Captured}", bank, pcr, PcrMatch.Equals, [Convert.ToHexStringLower(value)]));
            }
        }
        if (SecureBoot(claims) is { } secureBoot)
        {
            rules.Add(secureBoot);
        }
        if (BootApplications(claims) is { } apps)
        {
            rules.Add(apps);
        }
        if (KernelCmdline(claims) is { } cmdline)
        {
            rules.Add(cmdline);
        }
        return new PolicyDocument(id, 1, PolicyMode.Enforce, rules,
            "Baseline captured from a reference host's verified evidence: review and edit before enforcing.");
    }

    private static SecureBootRule? SecureBoot(PolicyClaims claims)
    {
        if (!claims.VerifiedPcrs.Contains(7) || !claims.SecureBootEnabled)
        {
            return null;
        }
        var databases = new Dictionary<string, DatabaseConstraint>(StringComparer.Ordinal);
        if (Single(claims, "db") is { } db && db.OtherEntries.Count == 0)
        {
            databases["db"] = new DatabaseConstraint(null, null, [.. db.Entries.Distinct()]);
        }
        if (Single(claims, "dbx") is { } dbx && dbx.Entries.Any())
        {
            databases["dbx"] = new DatabaseConstraint([.. dbx.Entries.Distinct()], null, null);
        }
        return new SecureBootRule("secure-boot", $"Secure Boot on; db and dbx {Captured}", true, databases);
    }

    private static SignatureDatabaseClaim? Single(PolicyClaims claims, string name) =>
        claims.Databases.TryGetValue(name, out var list) && list.Count == 1 && list[0].DataVerified ? list[0] : null;

    private static DigestsRule? BootApplications(PolicyClaims claims)
    {
        var select = DigestsRule.DefaultSelect;
        var apps = claims.BootApplications.Where(a => a.Pcr == select.Pcr).ToList();
        if (!claims.VerifiedPcrs.Contains(select.Pcr!.Value) || apps.Count == 0)
        {
            return null;
        }
        foreach (var bank in BankPreference)
        {
            if (apps.All(a => a.Digests.ContainsKey(bank)))
            {
                return new DigestsRule("boot-applications", $"boot applications (PCR 4) {Captured}", select, bank,
                    [.. apps.Select(a => a.Digests[bank]).Distinct()], null);
            }
        }
        return null;
    }

    private static KernelCmdlineRule? KernelCmdline(PolicyClaims claims)
    {
        var texts = claims.KernelCmdline.Where(c => c.Text is not null).ToList();
        if (texts.Count == 0 || texts.Any(c => !c.DataVerified))
        {
            return null;
        }
        var first = PolicyValues.Parameters(texts[0].Text!);
        if (texts.Any(c => !PolicyValues.Parameters(c.Text!).SequenceEqual(first, StringComparer.Ordinal)))
        {
            return null;
        }
        return new KernelCmdlineRule("kernel-cmdline", $"kernel command line {Captured}", string.Join(' ', first), null, null, null);
    }
}

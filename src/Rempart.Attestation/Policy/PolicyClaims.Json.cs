using System.Globalization;
using System.Text.Json.Nodes;
using Rempart.Tpm;

namespace Rempart.Attestation.Policy;

public sealed partial class PolicyClaims
{
    /// <summary>
    /// The claims as JSON, named as in docs/policy.md (<c>secureboot.enabled</c>,
    /// <c>boot.applications</c>, ...): what an operator looks at when writing or debugging a policy.
    /// </summary>
    public JsonObject ToJson()
    {
        var pcrs = new JsonObject();
        foreach (var (bank, values) in Pcrs.OrderBy(b => b.Key))
        {
            var o = new JsonObject();
            foreach (var (pcr, value) in values.OrderBy(p => p.Key))
            {
                o[pcr.ToString(CultureInfo.InvariantCulture)] = Convert.ToHexStringLower(value);
            }
            pcrs[TpmHash.ToName(bank)] = o;
        }
        var unverified = new JsonObject();
        foreach (var (pcr, why) in UnverifiedPcrs.OrderBy(p => p.Key))
        {
            unverified[pcr.ToString(CultureInfo.InvariantCulture)] = why;
        }
        var tpm = new JsonObject();
        foreach (var (k, v) in TpmProperties.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            tpm[k] = v;
        }
        tpm["firmwareVersion"] = TpmFirmwareVersion;
        return new JsonObject
        {
            ["pcrs"] = pcrs,
            ["verifiedPcrs"] = new JsonArray([.. VerifiedPcrs.Order().Select(p => (JsonNode)p)]),
            ["unverifiedPcrs"] = unverified,
            ["tpm"] = tpm,
            ["secureboot.enabled"] = SecureBootEnabled,
            ["secureboot.variable"] = Array(SecureBoot, s => new JsonObject
            {
                ["event"] = s.EventNumber, ["enabled"] = s.Enabled, ["raw"] = s.Raw, ["dataVerified"] = s.DataVerified,
            }),
            ["secureboot.databases"] = DatabasesJson(),
            ["boot.applications"] = Array(BootApplications, a => new JsonObject
            {
                ["event"] = a.EventNumber, ["pcr"] = a.Pcr, ["devicePath"] = a.DevicePath, ["digests"] = Digests(a.Digests),
            }),
            ["kernel.cmdline"] = Array(KernelCmdline, c => new JsonObject
            {
                ["event"] = c.EventNumber, ["pcr"] = c.Pcr, ["text"] = c.Text, ["source"] = c.Source, ["dataVerified"] = c.DataVerified,
            }),
            ["scrtm.version"] = Array(ScrtmVersion, s => new JsonObject
            {
                ["event"] = s.EventNumber, ["version"] = s.Version, ["dataVerified"] = s.DataVerified,
            }),
            ["events"] = Array(Events, e => new JsonObject
            {
                ["number"] = e.Number, ["pcr"] = e.Pcr, ["type"] = e.TypeName, ["digests"] = Digests(e.Digests),
                ["dataVerified"] = e.DataVerified, ["data"] = e.DataJson.DeepClone(),
            }),
        };
    }

    private JsonObject DatabasesJson()
    {
        var o = new JsonObject();
        foreach (var (name, claims) in Databases.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            o[name] = Array(claims, d => new JsonObject
            {
                ["event"] = d.EventNumber,
                ["dataVerified"] = d.DataVerified,
                ["certificates"] = Array(d.Certificates, c => new JsonObject { ["subject"] = c.Subject, ["sha256"] = c.Sha256 }),
                ["sha256"] = new JsonArray([.. d.Hashes.Select(h => (JsonNode)h)]),
                ["other"] = new JsonArray([.. d.OtherEntries.Select(h => (JsonNode)h)]),
            });
        }
        return o;
    }

    private static JsonObject Digests(IReadOnlyDictionary<TpmAlgId, string> digests)
    {
        var o = new JsonObject();
        foreach (var (bank, hex) in digests.OrderBy(d => d.Key))
        {
            o[TpmHash.ToName(bank)] = hex;
        }
        return o;
    }

    private static JsonArray Array<T>(IEnumerable<T> items, Func<T, JsonObject> f) => new([.. items.Select(i => (JsonNode)f(i))]);
}

using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rempart.Tpm;

/// <summary>
/// The PCR values file Rempart writes and reads (<c>pcrs.json</c>; the same shape as
/// <c>rempart eventlog replay --format json</c>):
/// <c>{"banks": {"sha256": {"0": "&lt;lowercase hex&gt;", …}, "sha1": {…}}}</c>, PCR
/// indexes as string keys.
/// </summary>
public static class PcrJson
{
    public static string Write(IReadOnlyDictionary<TpmAlgId, IReadOnlyDictionary<int, byte[]>> banks)
    {
        var root = new JsonObject();
        var b = new JsonObject();
        foreach (var (alg, pcrs) in banks.OrderBy(kv => kv.Key))
        {
            var o = new JsonObject();
            foreach (var (i, v) in pcrs.OrderBy(kv => kv.Key))
            {
                o[i.ToString(System.Globalization.CultureInfo.InvariantCulture)] = Convert.ToHexStringLower(v);
            }
            b[TpmHash.ToName(alg)] = o;
        }
        root["banks"] = b;
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Parses and validates a PCR values file; any problem is a <see cref="FormatException"/> naming it.</summary>
    public static Dictionary<TpmAlgId, Dictionary<int, byte[]>> Read(string json)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(json);
        }
        catch (JsonException e)
        {
            throw new FormatException($"PCR file is not JSON: {e.Message}", e);
        }
        if (root is not JsonObject obj || obj["banks"] is not JsonObject banks)
        {
            throw new FormatException("PCR file needs an object with a \"banks\" object");
        }
        var result = new Dictionary<TpmAlgId, Dictionary<int, byte[]>>();
        foreach (var (bankName, node) in banks)
        {
            if (!TpmHash.TryParse(bankName, out var alg))
            {
                throw new FormatException($"PCR file: unknown bank '{bankName}'");
            }
            if (node is not JsonObject pcrs)
            {
                throw new FormatException($"PCR file: bank '{bankName}' must be an object of index → hex");
            }
            var map = new Dictionary<int, byte[]>();
            foreach (var (key, value) in pcrs)
            {
                if (!int.TryParse(key, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int index) || index > 31)
                {
                    throw new FormatException($"PCR file: '{key}' in bank {bankName} is not a PCR index 0-31");
                }
                var hex = value?.GetValueKind() == JsonValueKind.String ? value.GetValue<string>() : null;
                byte[] digest;
                try
                {
                    digest = Convert.FromHexString(hex ?? throw new FormatException());
                }
                catch (FormatException)
                {
                    throw new FormatException($"PCR file: {bankName}:{key} is not a hex string");
                }
                if (digest.Length != TpmHash.DigestSize(alg))
                {
                    throw new FormatException($"PCR file: {bankName}:{key} has {digest.Length} bytes, a {bankName} digest has {TpmHash.DigestSize(alg)}");
                }
                map[index] = digest;
            }
            result[alg] = map;
        }
        return result;
    }
}

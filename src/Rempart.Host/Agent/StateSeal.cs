using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Rempart.Host.Vm;

namespace Rempart.Host.Agent;

/// <summary>
/// What this agent last left in a VM's <c>nvram.enc</c> and <c>vtpm/</c> (SHA-256 of each), kept
/// outside the bundle in <c>DATA/vm-state/NAME.seal</c> (root, 0600). Both files are authenticated
/// encryption, so nobody without the VM's key can forge them — but anyone with access to the
/// bundle's storage can put an older authentic copy back: UEFI variables from before a
/// <c>dbx</c> update (a revoked boot loader boots again) or a vTPM from before a key was
/// deleted or a PCR-sealed secret was rotated. A plain <c>vm start</c> refuses state that is not
/// the sealed one (<c>vm.state.rollback</c>). Disks are not covered (hashing them at every stop
/// would cost a read of each disk). docs/host-agent.md, "Rollback of the UEFI variables and vTPM".
/// </summary>
public sealed record StateSeal(string VmId, string Nvram, string Vtpm, DateTimeOffset At, string By)
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    public static string PathFor(string stateDir, string name) => Path.Combine(stateDir, name + ".seal");

    /// <summary>The digests of the bundle's variable store and vTPM state as they are now.</summary>
    public static StateSeal Of(VmBundle bundle, string by) =>
        new(bundle.Config.VmId, Digest([Path.Combine(bundle.Directory, VmBundle.NvramFile)], bundle.Directory),
            Digest(Directory.EnumerateFiles(bundle.VtpmStateDir).Order(StringComparer.Ordinal), bundle.VtpmStateDir),
            DateTimeOffset.UtcNow, by);

    /// <summary>Records the bundle's current state as the one this agent left.</summary>
    public static StateSeal Record(string stateDir, string name, VmBundle bundle, string by)
    {
        var seal = Of(bundle, by);
        SecureFiles.CreateDirectory(stateDir);
        SecureFiles.WriteAtomic(PathFor(stateDir, name), JsonSerializer.SerializeToUtf8Bytes(seal, Json));
        return seal;
    }

    /// <summary>The recorded seal, or null when there is none (a VM of an earlier agent).</summary>
    public static StateSeal? Load(string stateDir, string name)
    {
        var p = PathFor(stateDir, name);
        if (!File.Exists(p))
        {
            return null;
        }
        try
        {
            return JsonSerializer.Deserialize<StateSeal>(File.ReadAllBytes(p), Json)
                ?? throw new VmOperationException("vm.state.seal", $"{p} is empty");
        }
        catch (JsonException e)
        {
            throw new VmOperationException("vm.state.seal", $"{p} does not parse: {e.Message} (remove it only if you trust the VM's files: the next start records them again)");
        }
    }

    public static void Delete(string stateDir, string name) => File.Delete(PathFor(stateDir, name));

    /// <summary>Which of the two parts differ from <paramref name="recorded"/> (empty when none).</summary>
    public IReadOnlyList<string> Differences(StateSeal recorded)
    {
        var d = new List<string>();
        if (VmId != recorded.VmId)
        {
            d.Add("vm id");
        }
        if (!Same(Nvram, recorded.Nvram))
        {
            d.Add("UEFI variables (nvram.enc)");
        }
        if (!Same(Vtpm, recorded.Vtpm))
        {
            d.Add("vTPM state (vtpm/)");
        }
        return d;
    }

    private static bool Same(string a, string b) =>
        CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(a), Encoding.ASCII.GetBytes(b));

    /// <summary>SHA-256 over each file's name (relative), length and bytes, in the given order.</summary>
    private static string Digest(IEnumerable<string> files, string root)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> len = stackalloc byte[8];
        foreach (var f in files)
        {
            var name = Encoding.UTF8.GetBytes(Path.GetRelativePath(root, f));
            System.Buffers.Binary.BinaryPrimitives.WriteInt64BigEndian(len, name.Length);
            h.AppendData(len);
            h.AppendData(name);
            var bytes = File.ReadAllBytes(f);
            System.Buffers.Binary.BinaryPrimitives.WriteInt64BigEndian(len, bytes.Length);
            h.AppendData(len);
            h.AppendData(bytes);
        }
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }
}

using System.Globalization;
using System.Text;

namespace Rempart.Attestation.Tests.Decoding;

/// <summary>
/// Compares our device path text (EDK2 DevicePathToText style) with libefivar's
/// (efidp_format_device_path, which tpm2_eventlog prints) node by node. The two print the same
/// nodes with the same values; they differ only in these systematic ways, seen in the fixtures:
/// <list type="bullet">
/// <item>numbers: EDK2 prints hex (<c>Sata(0x1,0xffff,0x0)</c>, <c>USB(0xb,0x0)</c>, <c>MAC(…,0x1)</c>,
/// the IPv4 protocol <c>0x0</c>); libefivar prints decimal (<c>Sata(1,65535,0)</c>, <c>USB(11,0)</c>,
/// <c>MAC(…,1)</c>, <c>0</c>);</item>
/// <item>names: libefivar's <c>SCSI(1,0)</c> is EDK2's <c>Scsi(0x1,0x0)</c>, and its <c>FvVol(guid)</c>
/// is EDK2's (and UEFI 2.10 §10.6.1.6's) <c>Fv(guid)</c>.</item>
/// </list>
/// PciRoot, Pci, HD, Offset, FvFile, VenHw, BBS and file path nodes print identically. Not seen
/// in the fixtures: libefivar stops at an End Instance node where EDK2 prints ','.
/// </summary>
public static class DevicePathStyle
{
    /// <summary>libefivar node names that differ from EDK2's.</summary>
    public static readonly IReadOnlyDictionary<string, string> EfivarNames = new Dictionary<string, string>
    {
        ["SCSI"] = "Scsi",
        ["FvVol"] = "Fv",
    };

    /// <summary>The libefivar nodes whose text differs from ours in the fixtures (by the rules above).</summary>
    public static readonly IReadOnlySet<string> NodesPrintedDifferently = new HashSet<string> { "SCSI", "Sata", "USB", "FvVol", "MAC", "IPv4" };

    /// <summary>The nodes of a path: split at '/' outside parentheses.</summary>
    public static IReadOnlyList<string> Nodes(string path) => Split(path, '/');

    public static string Name(string node) => node.IndexOf('(') is var p and > 0 ? node[..p] : node;

    /// <summary>A node with its name mapped to EDK2's and each argument normalized (numbers by value).</summary>
    public static string Normalize(string node)
    {
        int open = node.IndexOf('(');
        if (open <= 0 || !node.EndsWith(')'))
        {
            return node;
        }
        string name = Name(node);
        name = EfivarNames.GetValueOrDefault(name, name);
        var args = Split(node[(open + 1)..^1], ',').Select(NormalizeArg);
        return $"{name}({string.Join(',', args)})";
    }

    public static bool SameNodes(string efivar, string ours) =>
        Nodes(efivar).Select(Normalize).SequenceEqual(Nodes(ours).Select(Normalize));

    private static string NormalizeArg(string a)
    {
        if (a.StartsWith("0x", StringComparison.OrdinalIgnoreCase) && ulong.TryParse(a[2..], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var hex))
        {
            return $"#{hex}";
        }
        return a.Length > 0 && a.All(char.IsAsciiDigit) && ulong.TryParse(a, CultureInfo.InvariantCulture, out var dec) ? $"#{dec}" : a;
    }

    private static List<string> Split(string s, char separator)
    {
        var parts = new List<string>();
        var current = new StringBuilder();
        int depth = 0;
        foreach (char c in s)
        {
            depth += c == '(' ? 1 : c == ')' ? -1 : 0;
            if (c == separator && depth == 0)
            {
                parts.Add(current.ToString());
                current.Clear();
                continue;
            }
            current.Append(c);
        }
        if (current.Length > 0 || parts.Count > 0)
        {
            parts.Add(current.ToString());
        }
        return parts;
    }
}

using System.Text;
using Rempart.Host.Vm;
using Rempart.KeyProtection;

namespace Rempart.Host.Tests.Vm;

/// <summary>vm.json: one accepted spelling per value; every other one refused, naming the field.</summary>
public sealed class VmConfigTests
{
    private static readonly VmConfig Sample = new("web-01", "vm-web-01", 2048, 2, [new VmDisk("os", 64L << 20), new VmDisk("data", 1L << 30)],
        SecureBootTemplate.Microsoft, ShieldingLevel.Shielded, new DateTimeOffset(2026, 11, 27, 8, 0, 0, TimeSpan.Zero));

    private static string Json => Encoding.UTF8.GetString(Sample.ToJsonBytes());

    [Fact]
    public void Round_trip()
    {
        var back = VmConfig.Parse(Sample.ToJsonBytes());
        Assert.Equal(Sample.ToJsonBytes(), back.ToJsonBytes());
        Assert.Equal(Sample.Disks, back.Disks);
        Assert.Contains("\"file\": \"disks/os.qcow2\"", Json, StringComparison.Ordinal);
        Assert.Contains("\"format\": \"qcow2-luks-aes-256-xts\"", Json, StringComparison.Ordinal);
    }

    public static TheoryData<string, string, string, string> Cases => new()
    {
        // case, text to replace, replacement, field named in the error
        { "version 2", "\"version\": 1", "\"version\": 2", "version" },
        { "version as 1.0", "\"version\": 1", "\"version\": 1.0", "version" },
        { "version as a string", "\"version\": 1", "\"version\": \"1\"", "version" },
        { "unknown field", "\"cpus\": 2", "\"cpus\": 2, \"gpu\": 1", "gpu" },
        { "duplicated field", "\"cpus\": 2", "\"cpus\": 2, \"cpus\": 2", "cpus" },
        { "missing field", "\"cpus\": 2,", "", "cpus" },
        { "cpus zero", "\"cpus\": 2", "\"cpus\": 0", "cpus" },
        { "cpus with a leading zero", "\"cpus\": 2", "\"cpus\": 02", "$" },
        { "cpus negative", "\"cpus\": 2", "\"cpus\": -2", "cpus" },
        { "memory as a float", "\"memoryMiB\": 2048", "\"memoryMiB\": 2048.0", "memoryMiB" },
        { "disk file elsewhere", "\"disks/os.qcow2\"", "\"../os.qcow2\"", "disks[0].file" },
        { "disk unknown format", "\"format\": \"qcow2-luks-aes-256-xts\"", "\"format\": \"raw\"", "disks[0].format" },
        { "disk ids repeated", "\"id\": \"data\"", "\"id\": \"os\"", "disks[1].id" },
        { "disk size not sectors", "\"sizeBytes\": 67108864", "\"sizeBytes\": 67108865", "disks[0].sizeBytes" },
        { "disk id with a slash", "\"id\": \"os\"", "\"id\": \"o/s\"", "disks[0].id" },
        { "secure boot template unknown", "\"microsoft\"", "\"none\"", "secureBoot" },
        { "shielding unknown", "\"shielded\"", "\"open\"", "shielding" },
        { "time with offset", "2026-11-27T08:00:00Z", "2026-11-27T08:00:00+00:00", "created" },
        { "time with fraction", "2026-11-27T08:00:00Z", "2026-11-27T08:00:00.5Z", "created" },
        { "vm id starting with a dot", "\"vm-web-01\"", "\".vm\"", "vmId" },
        { "trailing comma", "\"cpus\": 2,", "\"cpus\": 2,,", "$" },
        { "comment", "\"cpus\": 2,", "\"cpus\": 2, /* c */", "$" },
        { "root not an object", "{", "[{", "$" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Strict_parse_refuses(string name, string find, string replace, string field)
    {
        string json = Json;
        Assert.Contains(find, json, StringComparison.Ordinal);
        int at = json.IndexOf(find, StringComparison.Ordinal);
        string bad = json[..at] + replace + json[(at + find.Length)..];
        var e = Assert.Throws<VmBundleException>(() => VmConfig.Parse(Encoding.UTF8.GetBytes(bad)));
        Assert.Equal("bundle.format", e.Id);
        Assert.True(e.Message.Contains($", {field}:", StringComparison.Ordinal), $"{name}: {e.Message}");
    }
}

using System.Formats.Tar;
using Rempart.Host.Agent;

namespace Rempart.Host.Tests.Vm;

/// <summary>
/// <c>vm import</c> refuses an archive that is not a bundle before anything appears: entries outside
/// the bundle's known names, paths that climb out ('..', absolute), links and devices, hidden parts,
/// a damaged tar, a well-formed tar whose files are not a bundle. Nothing is left behind and
/// nothing is written outside the agent's folder. (The positive path, with real disks and a restore
/// on another host, is in tests/Rempart.Integration.Tests/VmMigrationTests.cs.)
/// </summary>
public sealed class VmImportTests : IAsyncDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-import-").FullName;
    private readonly VmManager _vms;

    public VmImportTests()
    {
        var data = Path.Combine(_dir, "data");
        _vms = new VmManager(VmHostOptions.Under(data, Path.Combine(_dir, "run")),
            (_, _) => throw new InvalidOperationException("no release in these tests"), new AgentAuditLog(Path.Combine(data, "audit.jsonl")));
    }

    public async ValueTask DisposeAsync()
    {
        await _vms.DisposeAsync();
        Directory.Delete(_dir, true);
    }

    private string Archive(Action<TarWriter> write)
    {
        var path = Path.Combine(_dir, Guid.NewGuid().ToString("n") + ".tar");
        using (var f = System.IO.File.Create(path))
        using (var tar = new TarWriter(f, TarEntryFormat.Pax))
        {
            write(tar);
        }
        return path;
    }

    private static void File(TarWriter tar, string name, string content = "x")
    {
        var e = new PaxTarEntry(TarEntryType.RegularFile, name) { DataStream = new MemoryStream(System.Text.Encoding.ASCII.GetBytes(content)) };
        tar.WriteEntry(e);
    }

    private async Task<string> Refused(string archive)
    {
        var e = await Assert.ThrowsAsync<VmOperationException>(() => _vms.ImportAsync(archive, CancellationToken.None));
        var vms = Path.Combine(_dir, "data", "vms");
        Assert.Empty(Directory.EnumerateFileSystemEntries(vms)); // no VM, no partial import left
        Assert.False(System.IO.File.Exists(Path.Combine(_dir, "evil")));
        return e.Id;
    }

    public static TheoryData<string> OutsideNames => new()
    {
        "../evil", "/tmp/evil", "./vm.json", "disks/../../evil", "disks/.hidden", "etc/passwd", "vm.json.bak", "disks//x", "vtpm/a\\b", "snapshots/s1/\u0001",
    };

    [Theory]
    [MemberData(nameof(OutsideNames))]
    public async Task An_entry_outside_the_bundle_is_refused(string name)
    {
        Assert.Equal("vm.import.entry", await Refused(Archive(t =>
        {
            File(t, "vm.json", "{}");
            File(t, name);
        })));
    }

    [Theory]
    [InlineData(TarEntryType.SymbolicLink)]
    [InlineData(TarEntryType.HardLink)]
    [InlineData(TarEntryType.CharacterDevice)]
    [InlineData(TarEntryType.Fifo)]
    public async Task Links_and_devices_are_refused(TarEntryType type)
    {
        Assert.Equal("vm.import.entry", await Refused(Archive(t =>
        {
            var e = new PaxTarEntry(type, "disks/system.qcow2");
            if (type is TarEntryType.SymbolicLink or TarEntryType.HardLink)
            {
                e.LinkName = "/etc/shadow";
            }
            t.WriteEntry(e);
        })));
    }

    [Fact]
    public async Task A_damaged_archive_or_one_that_is_not_a_bundle_is_refused()
    {
        var garbage = Path.Combine(_dir, "garbage.tar");
        await System.IO.File.WriteAllBytesAsync(garbage, [.. Enumerable.Repeat((byte)0x41, 1024)]);
        Assert.Equal("vm.import.format", await Refused(garbage));
        var notBundle = Archive(t =>
        {
            File(t, "vm.json", "{\"not\": \"a bundle\"}");
            File(t, "vm.kp", "nope");
        });
        Assert.StartsWith("vm.import.", await Refused(notBundle));
        Assert.Equal("vm.import.missing", await Refused(Path.Combine(_dir, "absent.tar")));
        Assert.Equal("vm.import.missing", await Refused("relative.tar"));
    }
}

using Rempart.Host.Agent;
using Rempart.Host.Tests.Vm;
using Rempart.Host.Vm;

namespace Rempart.Host.Tests.Agent;

/// <summary>The record of what the agent last left in a VM's variable store and vTPM state, and what it tells apart.</summary>
public sealed class StateSealTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("rempart-seal-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private VmBundle Bundle(out string dir)
    {
        var (kpJson, vmk) = VmTestKeys.New();
        using (vmk)
        {
            dir = Path.Combine(_root, "vm");
            var b = VmBundle.Create(dir, new VmSpec("sealed", 256, 1), kpJson);
            b.CreateNvram(vmk);
            File.WriteAllBytes(Path.Combine(dir, "vtpm", "tpm2-00.permall"), [1, 2, 3]);
            return b;
        }
    }

    [Fact]
    public void The_same_files_match_and_each_kind_of_change_is_named()
    {
        var b = Bundle(out var dir);
        var state = Path.Combine(_root, "state");
        Assert.Null(StateSeal.Load(state, "sealed"));
        var recorded = StateSeal.Record(state, "sealed", b, "test");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(StateSeal.PathFor(state, "sealed")));
        Assert.Equal(recorded, StateSeal.Load(state, "sealed"));
        Assert.Empty(StateSeal.Of(b, "now").Differences(recorded));

        var nvram = File.ReadAllBytes(Path.Combine(dir, "nvram.enc"));
        nvram[^1] ^= 1;
        File.WriteAllBytes(Path.Combine(dir, "nvram.enc"), nvram);
        Assert.Equal(["UEFI variables (nvram.enc)"], StateSeal.Of(b, "now").Differences(recorded));
        nvram[^1] ^= 1;
        File.WriteAllBytes(Path.Combine(dir, "nvram.enc"), nvram);

        File.WriteAllBytes(Path.Combine(dir, "vtpm", "tpm2-00.permall"), [1, 2, 4]);
        Assert.Equal(["vTPM state (vtpm/)"], StateSeal.Of(b, "now").Differences(recorded));
        File.WriteAllBytes(Path.Combine(dir, "vtpm", "tpm2-00.permall"), [1, 2, 3]);
        Assert.Empty(StateSeal.Of(b, "now").Differences(recorded));

        // A file more, or the same bytes under another name, is another state.
        File.WriteAllBytes(Path.Combine(dir, "vtpm", "tpm2-00.volatilestate"), []);
        Assert.Equal(["vTPM state (vtpm/)"], StateSeal.Of(b, "now").Differences(recorded));
        File.Delete(Path.Combine(dir, "vtpm", "tpm2-00.volatilestate"));
        File.Move(Path.Combine(dir, "vtpm", "tpm2-00.permall"), Path.Combine(dir, "vtpm", "tpm2-01.permall"));
        Assert.Equal(["vTPM state (vtpm/)"], StateSeal.Of(b, "now").Differences(recorded));

        Assert.Contains("vm id", (recorded with { VmId = "vm-other" }).Differences(recorded));
    }

    [Fact]
    public void A_damaged_seal_is_refused_by_id_and_a_deleted_one_is_gone()
    {
        var b = Bundle(out _);
        var state = Path.Combine(_root, "state");
        StateSeal.Record(state, "sealed", b, "test");
        File.WriteAllText(StateSeal.PathFor(state, "sealed"), "{\"vmId\": ");
        Assert.Equal("vm.state.seal", Assert.Throws<VmOperationException>(() => StateSeal.Load(state, "sealed")).Id);
        File.WriteAllText(StateSeal.PathFor(state, "sealed"), "null");
        Assert.Equal("vm.state.seal", Assert.Throws<VmOperationException>(() => StateSeal.Load(state, "sealed")).Id);
        StateSeal.Delete(state, "sealed");
        Assert.Null(StateSeal.Load(state, "sealed"));
    }
}

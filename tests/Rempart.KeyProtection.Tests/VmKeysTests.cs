namespace Rempart.KeyProtection.Tests;

public sealed class VmKeysTests
{
    private static readonly byte[] Vmk = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();

    [Theory]
    [InlineData("vtpm")]
    [InlineData("nvram")]
    [InlineData("disk/root")]
    [InlineData("disk/0")]
    [InlineData("snapshot/2030-01-01.1")]
    [InlineData("migration/m_42")]
    public void Valid_labels_derive_distinct_keys(string label)
    {
        Assert.True(VmKeys.IsValidLabel(label));
        using var vmk = VmMasterKey.FromBytes(Vmk);
        var a = vmk.Derive(label);
        Assert.Equal(32, a.Length);
        Assert.Equal(a, VmKeys.Derive(vmk, label));
        Assert.NotEqual(a, vmk.Derive(label == "vtpm" ? "nvram" : "vtpm"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("disk")]
    [InlineData("disk/")]
    [InlineData("disk/a/b")]
    [InlineData("disk/.hidden")]
    [InlineData("Disk/a")]
    [InlineData("vtpm/1")]
    [InlineData("backup/1")]
    [InlineData("disk/a b")]
    public void Other_labels_are_refused(string label)
    {
        Assert.False(VmKeys.IsValidLabel(label));
        using var vmk = VmMasterKey.FromBytes(Vmk);
        Assert.Throws<ArgumentException>(() => vmk.Derive(label));
    }

    [Theory]
    [InlineData("")]
    [InlineData("a/b")]
    [InlineData(".x")]
    [InlineData("a b")]
    public void Label_builders_refuse_bad_ids(string id)
    {
        Assert.Throws<ArgumentException>(() => VmKeys.Disk(id));
        Assert.Throws<ArgumentException>(() => VmKeys.Snapshot(id));
        Assert.Throws<ArgumentException>(() => VmKeys.Migration(id));
    }

    [Fact]
    public void Lengths_are_16_to_64_and_prefixes_of_each_other()
    {
        using var vmk = VmMasterKey.FromBytes(Vmk);
        Assert.Throws<ArgumentOutOfRangeException>(() => vmk.Derive("vtpm", 15));
        Assert.Throws<ArgumentOutOfRangeException>(() => vmk.Derive("vtpm", 65));
        Assert.Equal(vmk.Derive("vtpm", 16), vmk.Derive("vtpm", 64)[..16]);
        Assert.Equal("disk/d1", VmKeys.Disk("d1"));
        Assert.Equal("snapshot/s1", VmKeys.Snapshot("s1"));
        Assert.Equal("migration/x", VmKeys.Migration("x"));
    }
}

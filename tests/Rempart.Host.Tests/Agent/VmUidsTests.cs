using Rempart.Host.Agent;

namespace Rempart.Host.Tests.Agent;

/// <summary>One uid per running VM: never one in the user or group database, held by another VM, or owned by a process.</summary>
public sealed class VmUidsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-uids-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private VmUids Uids(int first, int count, string[]? passwd = null, string[]? group = null, (int Pid, string Uid, string Gid)[]? procs = null)
    {
        File.WriteAllLines(Path.Combine(_dir, "passwd"), passwd ?? ["root:x:0:0:root:/root:/bin/bash"]);
        File.WriteAllLines(Path.Combine(_dir, "group"), group ?? ["root:x:0:"]);
        var proc = Directory.CreateDirectory(Path.Combine(_dir, "proc")).FullName;
        Directory.CreateDirectory(Path.Combine(proc, "self"));
        foreach (var (pid, uid, gid) in procs ?? [])
        {
            var d = Directory.CreateDirectory(Path.Combine(proc, pid.ToString(System.Globalization.CultureInfo.InvariantCulture))).FullName;
            File.WriteAllText(Path.Combine(d, "status"), $"Name:\tqemu-system-x86\nUid:\t{uid}\nGid:\t{gid}\n");
        }
        return new VmUids(first, count, Path.Combine(_dir, "passwd"), Path.Combine(_dir, "group"), proc);
    }

    [Fact]
    public void A_vm_gets_its_preferred_uid_again_once_released_and_a_second_vm_another()
    {
        var uids = Uids(5000, 16);
        var a = uids.Allocate("web1");
        Assert.Equal(uids.Preferred("web1"), a.Uid);
        Assert.Equal(a.Uid, a.Gid);
        Assert.InRange(a.Uid, 5000, 5015);
        var again = uids.Allocate("web1-copy-with-the-same-preference-or-not");
        Assert.NotEqual(a.Uid, again.Uid);
        uids.Release("web1", a.Uid);
        Assert.Equal(a.Uid, uids.Allocate("web1").Uid);
        uids.Release("someone-else", a.Uid); // only the holder gives it back
        Assert.NotEqual(a.Uid, uids.Allocate("web1").Uid);
    }

    [Fact]
    public void Ids_in_the_user_or_group_database_or_owned_by_any_process_are_never_given()
    {
        // Range of 4: 7000 is a user, 7001 a group, 7002 a process's saved uid; only 7003 is free.
        var uids = Uids(7000, 4,
            passwd: ["root:x:0:0::/root:/bin/sh", "svc:x:7000:100::/:/usr/sbin/nologin"],
            group: ["root:x:0:", "odd:x:7001:"],
            procs: [(4242, "1000\t1000\t7002\t1000", "1000\t1000\t1000\t1000")]);
        Assert.Equal(7003, uids.Allocate("a").Uid);
        var e = Assert.Throws<VmOperationException>(() => uids.Allocate("b"));
        Assert.Equal("vm.uid.exhausted", e.Id);
    }

    [Fact]
    public void A_uid_held_from_a_reattached_vm_is_not_given_to_another()
    {
        var uids = Uids(9000, 2);
        uids.Hold("running-before-restart", 9000);
        uids.Hold("other", 9001);
        Assert.Equal("vm.uid.exhausted", Assert.Throws<VmOperationException>(() => uids.Allocate("new")).Id);
        uids.Release("other", 9001);
        Assert.Equal(9001, uids.Allocate("new").Uid);
    }

    [Fact]
    public void The_default_range_is_inside_what_systemd_leaves_unused()
    {
        // systemd.io/UIDS-GIDS: 1879048192…2147483647 unused; 2147352576… (0x7FFE0000) is its foreign-UID range.
        Assert.True(VmUids.DefaultFirst >= 1879048192);
        Assert.True((long)VmUids.DefaultFirst + VmUids.DefaultCount - 1 < 0x7FFE0000);
    }
}

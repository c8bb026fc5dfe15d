using System.Security.Cryptography;
using Rempart.Host.Qemu;

namespace Rempart.Host.Tests.Qemu;

public sealed class QemuCommandLineTests
{
    private static readonly UnixUser Vm = new("rempart-vm", 999, 994);

    private static QemuLaunchSpec Spec(ShieldingLevel level = ShieldingLevel.Shielded, ConfidentialMode mode = ConfidentialMode.None, bool lockMemory = false) => new()
    {
        Name = "web-1",
        MemoryMiB = 512,
        Cpus = 2,
        Accelerator = mode == ConfidentialMode.None ? Accelerator.Tcg : Accelerator.Kvm,
        FirmwareCode = "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd",
        NvramPath = "/dev/shm/rempart/web-1/vars.fd",
        SwtpmSocket = "/run/rempart/vms/web-1/swtpm.sock",
        Disks = [new QemuDisk("disk0", "/var/lib/rempart/vms/web-1/disk0.qcow2", "qcow2", "sec-disk0")],
        Shielding = level,
        SerialSocket = level == ShieldingLevel.EncryptionSupported ? "/run/rempart/vms/web-1/serial.sock" : null,
        QmpSocket = "/run/rempart/vms/web-1/qmp.sock",
        PidFile = "/run/rempart/vms/web-1/qemu.pid",
        Confidential = mode,
        RunAs = Vm,
        LockMemory = lockMemory,
    };

    private static readonly string[] Launcher =
    [
        "/usr/bin/prlimit", "--core=0", "--", "/usr/bin/setsid", "--", "/usr/bin/setpriv", "--reuid=999", "--regid=994",
        "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--",
    ];

    private static readonly string[] Tail =
    [
        "-qmp", "unix:/run/rempart/vms/web-1/qmp.sock,server=on,wait=off",
        "-pidfile", "/run/rempart/vms/web-1/qemu.pid",
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-msg", "timestamp=on",
        "-S",
    ];

    private static readonly string[] Tpm =
    [
        "-chardev", "socket,id=chrtpm,path=/run/rempart/vms/web-1/swtpm.sock",
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
        "-device", "tpm-crb,tpmdev=tpm0",
        "-device", "pcie-root-port,id=rp-disk0,bus=pcie.0,chassis=1",
        "-display", "none", "-vga", "none", "-nic", "none",
    ];

    private static readonly string[] SecureBootFirmware =
    [
        "-machine", "q35,smm=on,accel=tcg,dump-guest-core=off,memory-backend=ram0",
        "-global", "driver=cfi.pflash01,property=secure,value=on",
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd",
        "-drive", "if=pflash,format=raw,unit=1,file=/dev/shm/rempart/web-1/vars.fd",
        "-object", "memory-backend-memfd,id=ram0,size=512M,dump=off",
        "-m", "512", "-smp", "2",
    ];

    [Fact]
    public void Shielded_has_no_serial_monitor_display_or_parallel_and_is_exact()
    {
        var inv = QemuCommandLine.Build(Spec(), QemuVersion.Debian12);
        string[] expected = [.. Launcher, "/usr/bin/qemu-system-x86_64", "-name", "web-1", "-nodefaults", "-no-user-config", .. SecureBootFirmware, .. Tpm, .. Tail];
        Assert.Equal(expected, inv.Argv);
        Assert.Equal(expected[Launcher.Length..], inv.QemuArgv);
        Assert.DoesNotContain(inv.Argv, a => a is "-serial" or "-monitor" or "-parallel" or "-mon" or "-vnc" or "-spice" or "-gdb" or "-s" or "-daemonize" or "-runas");
        Assert.Equal("software", inv.RamProtection.Kind);
        Assert.False(inv.RamProtection.MemoryLocked);
        Assert.Equal(["memory.not-locked"], inv.RamProtection.Limits);
        Assert.Equal(QemuVersion.Debian12, inv.MinimumQemu);
    }

    [Fact]
    public void Encryption_supported_adds_only_a_serial_console_on_a_unix_socket()
    {
        var shielded = QemuCommandLine.Build(Spec(), QemuVersion.Debian12).QemuArgv;
        var es = QemuCommandLine.Build(Spec(ShieldingLevel.EncryptionSupported), QemuVersion.Debian12).QemuArgv;
        var i = es.ToList().IndexOf("-qmp");
        Assert.Equal(["-chardev", "socket,id=serial0,path=/run/rempart/vms/web-1/serial.sock,server=on,wait=off", "-serial", "chardev:serial0"], es.Skip(i - 4).Take(4));
        Assert.Equal(shielded, es.Take(i - 4).Concat(es.Skip(i)));
    }

    [Fact]
    public void A_restore_listens_for_the_snapshot_on_a_unix_socket_and_stays_paused()
    {
        var plain = QemuCommandLine.Build(Spec(), QemuVersion.Debian12).QemuArgv;
        var restore = QemuCommandLine.Build(Spec() with { IncomingSocket = "/run/rempart/vms/web-1/incoming.sock" }, QemuVersion.Debian12).QemuArgv;
        Assert.Equal([.. plain.Take(plain.Count - 1), "-incoming", "unix:/run/rempart/vms/web-1/incoming.sock", "-S"], restore);
        Assert.DoesNotContain(plain, a => a == "-incoming");
    }

    [Fact]
    public void Under_kvm_qemu_keeps_only_the_kvm_devices_group()
    {
        var kvm = Spec() with { Accelerator = Accelerator.Kvm, DeviceGroup = 993 };
        var argv = QemuCommandLine.Build(kvm, QemuVersion.Debian12).Argv.ToList();
        int setpriv = argv.IndexOf("/usr/bin/setpriv");
        Assert.Equal(["--reuid=999", "--regid=994", "--groups=993", "--inh-caps=-all", "--bounding-set=-all", "--"], argv.Skip(setpriv + 1).Take(6));
        Assert.DoesNotContain("--clear-groups", argv);
        // Without a device group (TCG, or a world-accessible /dev/kvm): no group at all.
        var tcg = QemuCommandLine.Build(Spec(), QemuVersion.Debian12).Argv;
        Assert.Contains("--clear-groups", tcg);
        Assert.DoesNotContain(tcg, a => a.StartsWith("--groups", StringComparison.Ordinal));
    }

    [Fact]
    public void Memory_lock_raises_the_childs_memlock_limit_and_asks_qemu_to_lock()
    {
        var inv = QemuCommandLine.Build(Spec(lockMemory: true), QemuVersion.Debian12);
        Assert.Equal(["/usr/bin/prlimit", "--core=0", "--memlock=unlimited", "--"], inv.Argv.Take(4));
        var q = inv.QemuArgv.ToList();
        Assert.Equal("mem-lock=on", q[q.IndexOf("-overcommit") + 1]);
        Assert.True(inv.RamProtection.MemoryLocked);
        Assert.Empty(inv.RamProtection.Limits);
    }

    [Fact]
    public void Sev_snp_uses_sev_snp_guest_with_bios_firmware_and_requires_qemu_9_1()
    {
        var spec = Spec(mode: ConfidentialMode.SevSnp) with { SevSnp = new SevSnpParameters(51, 1, 0x30000) };
        var inv = QemuCommandLine.Build(spec, new QemuVersion(9, 1, 0));
        string[] expected =
        [
            "/usr/bin/qemu-system-x86_64", "-name", "web-1", "-nodefaults", "-no-user-config",
            "-machine", "q35,smm=off,accel=kvm,dump-guest-core=off,memory-backend=ram0,confidential-guest-support=cgs0",
            "-bios", "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd",
            "-drive", "if=pflash,format=raw,unit=0,file=/dev/shm/rempart/web-1/vars.fd",
            "-object", "memory-backend-memfd,id=ram0,size=512M,dump=off", "-m", "512", "-smp", "2", "-cpu", "host",
            "-object", "sev-snp-guest,id=cgs0,cbitpos=51,reduced-phys-bits=1,policy=0x30000",
            .. Tpm, .. Tail,
        ];
        Assert.Equal(expected, inv.QemuArgv);
        Assert.Equal(new QemuVersion(9, 1, 0), inv.MinimumQemu);
        Assert.Equal("sev-snp", inv.RamProtection.Kind);
        Assert.Contains("sev-snp.varstore-not-smm-protected", inv.RamProtection.Limits);

        var old = Assert.Throws<QemuConfigurationException>(() => QemuCommandLine.Build(spec, QemuVersion.Debian12));
        Assert.Equal("qemu.version.sev-snp", old.Id);
    }

    [Fact]
    public void Tdx_uses_tdx_guest_split_irqchip_and_requires_qemu_10_1()
    {
        var mr = new byte[48];
        mr[0] = 0xAB;
        var spec = Spec(mode: ConfidentialMode.Tdx) with { Tdx = new TdxParameters(true, mr) };
        var inv = QemuCommandLine.Build(spec, new QemuVersion(10, 1, 0));
        string[] expected =
        [
            "/usr/bin/qemu-system-x86_64", "-name", "web-1", "-nodefaults", "-no-user-config",
            "-machine", "q35,smm=off,kernel-irqchip=split,accel=kvm,dump-guest-core=off,memory-backend=ram0,confidential-guest-support=cgs0",
            "-bios", "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd",
            "-object", "memory-backend-memfd,id=ram0,size=512M,dump=off", "-m", "512", "-smp", "2", "-cpu", "host",
            "-object", "tdx-guest,id=cgs0,sept-ve-disable=on,mrconfigid=" + Convert.ToBase64String(mr),
            .. Tpm, .. Tail,
        ];
        Assert.Equal(expected, inv.QemuArgv);
        Assert.Equal(new QemuVersion(10, 1, 0), inv.MinimumQemu);
        Assert.Equal("tdx", inv.RamProtection.Kind);
        Assert.Contains("tdx.nvram-volatile", inv.RamProtection.Limits);
        Assert.Equal("qemu.version.tdx", Assert.Throws<QemuConfigurationException>(() => QemuCommandLine.Build(spec, new QemuVersion(10, 0, 2))).Id);
    }

    public static TheoryData<string, Func<QemuLaunchSpec, QemuLaunchSpec>> Refused => new()
    {
        { "qemu.spec.serial", s => s with { SerialSocket = "/run/x/serial.sock" } },
        { "qemu.spec.serial", s => s with { Shielding = ShieldingLevel.EncryptionSupported } },
        { "qemu.spec.confidential.accel", s => s with { Confidential = ConfidentialMode.SevSnp, Accelerator = Accelerator.Tcg } },
        { "qemu.spec.run-as-root", s => s with { RunAs = new UnixUser("root", 0, 0) } },
        { "qemu.spec.run-as-root", s => s with { RunAs = new UnixUser("x", 1000, 0) } },
        { "qemu.spec.device-group", s => s with { DeviceGroup = 993 } }, // under TCG: no device to open
        { "qemu.spec.device-group", s => s with { Accelerator = Accelerator.Kvm, DeviceGroup = 0 } },
        { "qemu.spec.name", s => s with { Name = "Web 1" } },
        { "qemu.spec.name", s => s with { Name = "a,b" } },
        { "qemu.spec.path", s => s with { NvramPath = "/dev/shm/a,b/vars.fd" } },
        { "qemu.spec.path", s => s with { QmpSocket = "relative/qmp.sock" } },
        { "qemu.spec.path", s => s with { FirmwareCode = "/x\n-monitor" } },
        { "qemu.spec.path", s => s with { IncomingSocket = "relative/incoming.sock" } },
        { "qemu.spec.path", s => s with { IncomingSocket = "/run/x/in.sock,server=off" } },
        { "qemu.spec.memory", s => s with { MemoryMiB = 16 } },
        { "qemu.spec.cpus", s => s with { Cpus = 0 } },
        { "qemu.spec.disk.id", s => s with { Disks = [new QemuDisk("d,0", "/d.qcow2")] } },
        { "qemu.spec.disk.id", s => s with { Disks = [new QemuDisk("d0", "/a.qcow2"), new QemuDisk("d0", "/b.qcow2")] } },
        { "qemu.spec.disk.format", s => s with { Disks = [new QemuDisk("d0", "/d.raw", "raw", "sec0")] } },
        { "qemu.spec.disk.format", s => s with { Disks = [new QemuDisk("d0", "/d.vmdk", "vmdk")] } },
        { "qemu.spec.disk.secret-id", s => s with { Disks = [new QemuDisk("d0", "/d.qcow2", "qcow2", "a b")] } },
        { "qemu.spec.tdx.mrconfigid", s => s with { Confidential = ConfidentialMode.Tdx, Accelerator = Accelerator.Kvm, Tdx = new TdxParameters(true, new byte[47]) } },
    };

    [Theory]
    [MemberData(nameof(Refused))]
    public void Specs_breaking_a_rule_are_refused_by_id(string id, Func<QemuLaunchSpec, QemuLaunchSpec> change)
    {
        var ex = Assert.Throws<QemuConfigurationException>(() => QemuCommandLine.Build(change(Spec()), new QemuVersion(10, 1, 0)));
        Assert.Equal(id, ex.Id);
    }

    [Fact]
    public void No_secret_reaches_the_argv_or_the_disk_commands()
    {
        var key = RandomNumberGenerator.GetBytes(64);
        var spec = Spec(ShieldingLevel.EncryptionSupported, lockMemory: true);
        var all = string.Join("\n", QemuCommandLine.Build(spec, QemuVersion.Debian12).Argv);
        var disk = string.Join("\n", spec.Disks.SelectMany(QemuDiskCommands.For).Select(c => c.Command + " " + c.Arguments.ToJsonString()));
        foreach (var text in new[] { all, disk })
        {
            Assert.DoesNotContain(Convert.ToBase64String(key), text, StringComparison.Ordinal);
            Assert.DoesNotContain(Convert.ToHexString(key), text, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("data=", text, StringComparison.Ordinal);
            Assert.DoesNotContain("\"data\"", text, StringComparison.Ordinal);
        }
        Assert.DoesNotContain("secret", all, StringComparison.Ordinal);
    }

    [Fact]
    public void Disk_commands_open_a_luks_qcow2_with_its_secret_in_its_root_port()
    {
        var cmds = QemuDiskCommands.For(new QemuDisk("disk0", "/v/disk0.qcow2", "qcow2", "sec-disk0"));
        Assert.Equal(["blockdev-add", "device_add"], cmds.Select(c => c.Command));
        Assert.Equal("""{"driver":"qcow2","node-name":"disk0","read-only":false,"file":{"driver":"file","filename":"/v/disk0.qcow2","read-only":false},"encrypt":{"format":"luks","key-secret":"sec-disk0"}}""",
            cmds[0].Arguments.ToJsonString());
        Assert.Equal("""{"driver":"virtio-blk-pci","id":"disk0","drive":"disk0","bus":"rp-disk0"}""", cmds[1].Arguments.ToJsonString());
        var allow = new QmpAllowlist();
        Assert.All(cmds, c => Assert.True(allow.Check(c.Command, c.Arguments).Allowed));
    }

    [Theory]
    [InlineData("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)", 7, 2, 22)]
    [InlineData("9.1", 9, 1, 0)]
    public void Qemu_versions_parse(string text, int major, int minor, int micro) =>
        Assert.Equal(new QemuVersion(major, minor, micro), QemuVersion.Parse(text));
}

using System.Text.Json.Nodes;
using Rempart.Host.Qemu;

namespace Rempart.Host.Tests.Qemu;

public sealed class QmpAllowlistTests
{
    private const string Disk = """{"driver":"qcow2","node-name":"disk0","read-only":false,"file":{"driver":"file","filename":"/v/d.qcow2"},"encrypt":{"format":"luks","key-secret":"sec0"}}""";

    /// <summary>case, command, arguments (JSON or null), expected refusal id (null: allowed).</summary>
    public static TheoryData<string, string, string?, string?> Cases => new()
    {
        { "status", "query-status", null, null },
        { "block", "query-block", null, null },
        { "cont", "cont", null, null },
        { "stop", "stop", null, null },
        { "powerdown", "system_powerdown", null, null },
        { "quit", "quit", null, null },
        { "sev status", "query-sev", null, null },
        { "dump", "dump-guest-memory", """{"paging":false,"protocol":"file:/tmp/x"}""", "qmp.refused.memory-read" },
        { "pmemsave", "pmemsave", """{"val":0,"size":4096,"filename":"/tmp/x"}""", "qmp.refused.memory-read" },
        { "memsave", "memsave", """{"val":0,"size":4096,"filename":"/tmp/x"}""", "qmp.refused.memory-read" },
        { "hmp", "human-monitor-command", """{"command-line":"info registers"}""", "qmp.refused.hmp" },
        { "chardev-add", "chardev-add", """{"id":"c","backend":{"type":"null","data":{}}}""", "qmp.refused.chardev" },
        { "chardev-change", "chardev-change", """{"id":"serial0","backend":{"type":"null","data":{}}}""", "qmp.refused.chardev" },
        { "unknown command", "qom-set", """{"path":"/machine","property":"dump-guest-core","value":true}""", "qmp.refused.command" },
        { "screendump", "screendump", """{"filename":"/tmp/x"}""", "qmp.refused.command" },
        { "getfd", "getfd", """{"fdname":"x"}""", "qmp.refused.command" },
        { "migrate parameters: TLS", "migrate-set-parameters", """{"tls-creds":"x"}""", "qmp.refused.migrate.parameter" },
        { "migrate parameters: pacing and TLS", "migrate-set-parameters", """{"max-bandwidth":1,"tls-hostname":"x"}""", "qmp.refused.migrate.parameter" },
        { "migrate parameters: pacing as text", "migrate-set-parameters", """{"max-bandwidth":"1"}""", "qmp.refused.migrate.parameter" },
        { "migrate parameters: pacing", "migrate-set-parameters", """{"max-bandwidth":8589934592,"downtime-limit":300}""", null },
        { "migrate capability: pause", "migrate-set-capabilities", """{"capabilities":[{"capability":"pause-before-switchover","state":true}]}""", null },
        { "migrate capability: shared RAM", "migrate-set-capabilities", """{"capabilities":[{"capability":"x-ignore-shared","state":true}]}""", "qmp.refused.migrate.capability" },
        { "migrate capability: postcopy", "migrate-set-capabilities", """{"capabilities":[{"capability":"events","state":true},{"capability":"postcopy-ram","state":true}]}""", "qmp.refused.migrate.capability" },
        { "migrate capability: malformed", "migrate-set-capabilities", """{"capabilities":{"capability":"events"}}""", "qmp.refused.arguments" },
        { "migrate continue", "migrate-continue", """{"state":"pre-switchover"}""", null },
        { "migrate continue elsewhere", "migrate-continue", """{"state":"active"}""", "qmp.refused.arguments" },
        { "secret", "object-add", """{"qom-type":"secret","id":"sec0","data":"AAAA","format":"base64"}""", null },
        { "secret from a file", "object-add", """{"qom-type":"secret","id":"sec0","file":"/etc/shadow"}""", "qmp.refused.arguments" },
        { "secret with keyid", "object-add", """{"qom-type":"secret","id":"sec0","data":"AAAA","keyid":"master"}""", "qmp.refused.arguments" },
        { "secret bad id", "object-add", """{"qom-type":"secret","id":"../x","data":"AAAA"}""", "qmp.refused.arguments" },
        { "memfd backend", "object-add", """{"qom-type":"memory-backend-memfd","id":"m","size":4096}""", "qmp.refused.object.memory-backend" },
        { "file backend", "object-add", """{"qom-type":"memory-backend-file","id":"m","mem-path":"/tmp/ram","size":4096}""", "qmp.refused.object.memory-backend" },
        { "other object", "object-add", """{"qom-type":"filter-dump","id":"f","netdev":"n","file":"/tmp/x"}""", "qmp.refused.object.type" },
        { "object without type", "object-add", """{"id":"x"}""", "qmp.refused.arguments" },
        { "disk device", "device_add", """{"driver":"virtio-blk-pci","id":"disk0","drive":"disk0","bus":"rp-disk0"}""", null },
        { "disk device on pcie.0", "device_add", """{"driver":"virtio-blk-pci","id":"disk0","drive":"disk0","bus":"pcie.0"}""", "qmp.refused.arguments" },
        { "disk device extra property", "device_add", """{"driver":"virtio-blk-pci","id":"disk0","drive":"disk0","bus":"rp-disk0","romfile":"/x"}""", "qmp.refused.arguments" },
        { "isa-serial", "device_add", """{"driver":"isa-serial","chardev":"c"}""", "qmp.refused.device.console" },
        { "usb-serial", "device_add", """{"driver":"usb-serial","chardev":"c"}""", "qmp.refused.device.console" },
        { "virtconsole", "device_add", """{"driver":"virtconsole","chardev":"c"}""", "qmp.refused.device.console" },
        { "virtio-serial", "device_add", """{"driver":"virtio-serial-pci"}""", "qmp.refused.device.console" },
        { "vga", "device_add", """{"driver":"VGA"}""", "qmp.refused.device.console" },
        { "isa-debugcon", "device_add", """{"driver":"isa-debugcon","chardev":"c"}""", "qmp.refused.device.debug" },
        { "ivshmem", "device_add", """{"driver":"ivshmem-plain","memdev":"m"}""", "qmp.refused.device.debug" },
        { "vsock", "device_add", """{"driver":"vhost-vsock-pci","guest-cid":3}""", "qmp.refused.device.debug" },
        { "nic", "device_add", """{"driver":"e1000"}""", "qmp.refused.device.driver" },
        { "device without driver", "device_add", """{"id":"x"}""", "qmp.refused.arguments" },
        { "device driver not a string", "device_add", """{"driver":["isa-serial"]}""", "qmp.refused.arguments" },
        { "luks qcow2", "blockdev-add", Disk, null },
        { "raw over a node", "blockdev-add", """{"driver":"raw","node-name":"d1","file":"d1-file"}""", null },
        { "nbd", "blockdev-add", """{"driver":"nbd","node-name":"n","server":{"type":"inet","host":"evil","port":"10809"}}""", "qmp.refused.blockdev.driver" },
        { "qcow2 over nbd", "blockdev-add", """{"driver":"qcow2","node-name":"d","file":{"driver":"nbd","server":{"type":"unix","path":"/x"}}}""", "qmp.refused.blockdev.driver" },
        { "qcow2 with backing", "blockdev-add", """{"driver":"qcow2","node-name":"d","file":"f","backing":"other"}""", "qmp.refused.arguments" },
        { "relative file", "blockdev-add", """{"driver":"raw","node-name":"d","file":{"driver":"file","filename":"x.img"}}""", "qmp.refused.arguments" },
        { "luks on raw", "blockdev-add", """{"driver":"raw","node-name":"d","file":"f","encrypt":{"format":"luks","key-secret":"s"}}""", "qmp.refused.arguments" },
        { "migrate anywhere", "migrate", """{"uri":"tcp:203.0.113.9:4444"}""", "qmp.refused.migrate.target" },
        { "migrate to exec", "migrate", """{"uri":"exec:cat > /tmp/mem"}""", "qmp.refused.migrate.target" },
        { "migrate without uri", "migrate", """{"channels":[]}""", "qmp.refused.migrate.target" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Decides_by_rule(string name, string command, string? arguments, string? refusal)
    {
        var d = new QmpAllowlist().Check(command, arguments is null ? null : JsonNode.Parse(arguments)!.AsObject());
        Assert.True(refusal is null == d.Allowed, name);
        Assert.Equal(refusal, d.RefusalId);
    }

    [Fact]
    public void Migration_goes_only_to_a_target_the_agent_allowed_and_only_while_allowed()
    {
        var allow = new QmpAllowlist();
        var args = JsonNode.Parse("""{"uri":"unix:/run/rempart/migrate/web-1.sock"}""")!.AsObject();
        Assert.Equal("qmp.refused.migrate.target", allow.Check("migrate", args).RefusalId);
        allow.AllowMigrationTo("unix:/run/rempart/migrate/web-1.sock");
        Assert.True(allow.Check("migrate", args).Allowed);
        Assert.Equal("qmp.refused.migrate.target", allow.Check("migrate", JsonNode.Parse("""{"uri":"unix:/tmp/other.sock"}""")!.AsObject()).RefusalId);
        allow.RevokeMigrationTo("unix:/run/rempart/migrate/web-1.sock");
        Assert.False(allow.Check("migrate", args).Allowed);
    }
}

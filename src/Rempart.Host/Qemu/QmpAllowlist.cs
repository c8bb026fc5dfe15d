using System.Collections.Frozen;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rempart.Host.Qemu;

/// <summary>The allowlist's answer: allowed, or refused by a named rule.</summary>
public readonly record struct QmpDecision(bool Allowed, string? RefusalId, string? Reason)
{
    public static QmpDecision Allow { get; } = new(true, null, null);

    public static QmpDecision Refuse(string id, string reason) => new(false, id, reason);
}

/// <summary>
/// The agent-side QMP filter (G5, G7): every command to a VM's QEMU passes through it, whoever asks.
/// Anything not explicitly allowed is refused; the refusals that matter have their own rule id.
/// The same rules apply at both shielding levels (the serial console is the agent's, not QMP's).
/// </summary>
public sealed class QmpAllowlist
{
    /// <summary>Commands allowed with any arguments (none of them reads guest memory or opens a path).</summary>
    public static FrozenSet<string> Plain { get; } = new[]
    {
        "qmp_capabilities", "query-status", "query-block", "query-blockstats", "query-named-block-nodes",
        "query-version", "query-kvm", "query-name", "query-cpus-fast", "query-migrate", "query-sev",
        "query-memdev", "query-tpm", "query-commands",
        "cont", "stop", "system_powerdown", "system_reset", "system_wakeup", "quit",
        "device_del", "blockdev-del", "object-del", "migrate_cancel",
    }.ToFrozenSet(StringComparer.Ordinal);

    /// <summary>Commands that read guest memory.</summary>
    public static FrozenSet<string> MemoryReads { get; } = new[] { "dump-guest-memory", "pmemsave", "memsave" }.ToFrozenSet(StringComparer.Ordinal);

    /// <summary>Device drivers that are a console, serial or parallel port.</summary>
    public static FrozenSet<string> ConsoleDevices { get; } = new[]
    {
        "isa-serial", "pci-serial", "pci-serial-2x", "pci-serial-4x", "usb-serial", "usb-braille", "virtio-serial-pci",
        "virtio-serial-device", "virtio-serial", "virtconsole", "virtserialport", "isa-parallel", "usb-kbd", "usb-tablet",
        "virtio-keyboard-pci", "virtio-tablet-pci", "virtio-gpu-pci", "VGA", "bochs-display", "qxl-vga", "ramfb", "cirrus-vga",
    }.ToFrozenSet(StringComparer.Ordinal);

    /// <summary>Device drivers that open a debug, test or shared-memory path into the guest.</summary>
    public static FrozenSet<string> DebugDevices { get; } = new[]
    {
        "isa-debugcon", "isa-debug-exit", "pvpanic", "pvpanic-pci", "pc-testdev", "pci-testdev", "edu", "ivshmem-plain",
        "ivshmem-doorbell", "vhost-vsock-pci", "vhost-user-vsock-pci", "vmcoreinfo", "ipmi-bmc-sim", "ipmi-bmc-extern", "isa-ipmi-kcs",
    }.ToFrozenSet(StringComparer.Ordinal);

    private static readonly FrozenSet<string> DeviceKeys = new[] { "driver", "id", "drive", "bus", "bootindex" }.ToFrozenSet(StringComparer.Ordinal);
    private static readonly FrozenSet<string> SecretKeys = new[] { "qom-type", "id", "data", "format" }.ToFrozenSet(StringComparer.Ordinal);
    private static readonly FrozenSet<string> MigrateKeys = new[] { "uri", "detach", "resume" }.ToFrozenSet(StringComparer.Ordinal);
    private static readonly FrozenSet<string> FormatKeys = new[] { "driver", "node-name", "file", "read-only", "encrypt", "discard", "cache", "detect-zeroes" }.ToFrozenSet(StringComparer.Ordinal);
    private static readonly FrozenSet<string> FileKeys = new[] { "driver", "filename", "node-name", "read-only", "aio", "locking", "discard", "cache" }.ToFrozenSet(StringComparer.Ordinal);

    private readonly Lock _lock = new();
    private FrozenSet<string> _migrationTargets = FrozenSet<string>.Empty;

    /// <summary>Allows <c>migrate</c> to this URI (the agent's own, for one migration).</summary>
    public void AllowMigrationTo(string uri)
    {
        lock (_lock)
        {
            _migrationTargets = _migrationTargets.Append(uri).ToFrozenSet(StringComparer.Ordinal);
        }
    }

    public void RevokeMigrationTo(string uri)
    {
        lock (_lock)
        {
            _migrationTargets = _migrationTargets.Where(u => u != uri).ToFrozenSet(StringComparer.Ordinal);
        }
    }

    /// <summary>Decides on one command and its arguments (as they would be sent).</summary>
    public QmpDecision Check(string command, JsonObject? arguments)
    {
        if (Plain.Contains(command))
        {
            return QmpDecision.Allow;
        }
        if (MemoryReads.Contains(command))
        {
            return QmpDecision.Refuse("qmp.refused.memory-read", "reads guest memory");
        }
        try
        {
            return command switch
            {
                "human-monitor-command" => QmpDecision.Refuse("qmp.refused.hmp", "the human monitor bypasses this allowlist"),
                "chardev-add" or "chardev-change" => QmpDecision.Refuse("qmp.refused.chardev", "a character device is a console path"),
                "object-add" => ObjectAdd(arguments),
                "device_add" => DeviceAdd(arguments),
                "blockdev-add" => BlockdevAdd(arguments),
                "migrate" => Migrate(arguments),
                "migrate-set-capabilities" => MigrateCapabilities(arguments),
                "migrate-set-parameters" => MigrateParameters(arguments),
                "migrate-continue" => String(arguments, "state") == "pre-switchover" && OnlyKeys(arguments!, ContinueKeys) ? QmpDecision.Allow : Malformed(),
                _ => QmpDecision.Refuse("qmp.refused.command", "not on the allowlist"),
            };
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException or JsonException)
        {
            return QmpDecision.Refuse("qmp.refused.arguments", "malformed arguments");
        }
    }

    private static QmpDecision ObjectAdd(JsonObject? a)
    {
        var type = String(a, "qom-type");
        if (type is null)
        {
            return Malformed();
        }
        if (type.StartsWith("memory-backend", StringComparison.Ordinal))
        {
            return QmpDecision.Refuse("qmp.refused.object.memory-backend", "a memory backend can map guest memory elsewhere");
        }
        if (type != "secret")
        {
            return QmpDecision.Refuse("qmp.refused.object.type", "only secret objects may be added");
        }
        // Inline data only: 'file' and 'keyid' would make QEMU read a path or another secret.
        return OnlyKeys(a!, SecretKeys) && String(a, "id") is { } id && QemuCommandLine.IdPattern().IsMatch(id) && String(a, "data") is not null
            && (a!["format"] is null || String(a, "format") is "base64" or "raw")
            ? QmpDecision.Allow
            : Malformed();
    }

    private static QmpDecision DeviceAdd(JsonObject? a)
    {
        var driver = String(a, "driver");
        if (driver is null)
        {
            return Malformed();
        }
        if (ConsoleDevices.Contains(driver))
        {
            return QmpDecision.Refuse("qmp.refused.device.console", "a console, serial, parallel or input device");
        }
        if (DebugDevices.Contains(driver))
        {
            return QmpDecision.Refuse("qmp.refused.device.debug", "a debug, test or shared-memory device");
        }
        if (driver != "virtio-blk-pci")
        {
            return QmpDecision.Refuse("qmp.refused.device.driver", "only virtio-blk-pci disks may be added");
        }
        return OnlyKeys(a!, DeviceKeys) && String(a, "id") is not null && String(a, "drive") is not null
            && String(a, "bus") is { } bus && bus.StartsWith("rp-", StringComparison.Ordinal)
            ? QmpDecision.Allow
            : Malformed();
    }

    private static QmpDecision BlockdevAdd(JsonObject? a)
    {
        var driver = String(a, "driver");
        if (driver is not ("qcow2" or "raw"))
        {
            return driver is null ? Malformed() : QmpDecision.Refuse("qmp.refused.blockdev.driver", "only qcow2 or raw over a local file");
        }
        if (!OnlyKeys(a!, FormatKeys) || String(a, "node-name") is null)
        {
            return Malformed();
        }
        if (a!["encrypt"] is { } encrypt && (encrypt is not JsonObject e || String(e, "format") != "luks" || String(e, "key-secret") is null
            || e.Count != 2 || driver != "qcow2"))
        {
            return Malformed();
        }
        return a["file"] switch
        {
            JsonValue v when v.GetValueKind() == JsonValueKind.String => QmpDecision.Allow, // a node added before
            JsonObject f when String(f, "driver") == "file" && OnlyKeys(f, FileKeys) && String(f, "filename") is { } path && path.StartsWith('/') => QmpDecision.Allow,
            JsonObject f when String(f, "driver") is not null and not "file" => QmpDecision.Refuse("qmp.refused.blockdev.driver", "only qcow2 or raw over a local file"),
            _ => Malformed(),
        };
    }

    private QmpDecision Migrate(JsonObject? a)
    {
        var uri = String(a, "uri");
        if (uri is null || !OnlyKeys(a!, MigrateKeys))
        {
            return QmpDecision.Refuse("qmp.refused.migrate.target", "migration only to a target the agent set up");
        }
        return _migrationTargets.Contains(uri)
            ? QmpDecision.Allow
            : QmpDecision.Refuse("qmp.refused.migrate.target", "migration only to a target the agent set up");
    }

    /// <summary>Capabilities that change how the stream is paced or when it pauses, never where it goes or what it carries.</summary>
    public static FrozenSet<string> MigrationCapabilities { get; } = new[] { "pause-before-switchover", "auto-converge", "events" }.ToFrozenSet(StringComparer.Ordinal);

    /// <summary>Parameters about pacing only (no TLS or target settings: the agent's channel encrypts, and QEMU's TLS must not be switched off or pointed elsewhere).</summary>
    public static FrozenSet<string> MigrationParameters { get; } = new[] { "max-bandwidth", "downtime-limit", "cpu-throttle-initial", "cpu-throttle-increment" }.ToFrozenSet(StringComparer.Ordinal);

    private static readonly FrozenSet<string> ContinueKeys = new[] { "state" }.ToFrozenSet(StringComparer.Ordinal);

    private static QmpDecision MigrateCapabilities(JsonObject? a)
    {
        if (a is null || !OnlyKeys(a, CapabilitiesKeys) || a["capabilities"] is not JsonArray list)
        {
            return Malformed();
        }
        foreach (var item in list)
        {
            if (item is not JsonObject c || String(c, "capability") is not { } name || !OnlyKeys(c, CapabilityKeys))
            {
                return Malformed();
            }
            if (!MigrationCapabilities.Contains(name))
            {
                return QmpDecision.Refuse("qmp.refused.migrate.capability", $"migration capability '{name}' is not one the agent uses");
            }
        }
        return QmpDecision.Allow;
    }

    private static readonly FrozenSet<string> CapabilitiesKeys = new[] { "capabilities" }.ToFrozenSet(StringComparer.Ordinal);
    private static readonly FrozenSet<string> CapabilityKeys = new[] { "capability", "state" }.ToFrozenSet(StringComparer.Ordinal);

    private static QmpDecision MigrateParameters(JsonObject? a) =>
        a is not null && a.Count > 0 && a.All(p => MigrationParameters.Contains(p.Key) && p.Value is JsonValue v && v.GetValueKind() == JsonValueKind.Number)
            ? QmpDecision.Allow
            : QmpDecision.Refuse("qmp.refused.migrate.parameter", "only pacing parameters (" + string.Join(", ", MigrationParameters) + ") with numeric values");

    private static QmpDecision Malformed() => QmpDecision.Refuse("qmp.refused.arguments", "arguments outside what the rule allows");

    private static string? String(JsonObject? o, string name) =>
        o?[name] is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;

    private static bool OnlyKeys(JsonObject o, FrozenSet<string> allowed) => o.All(p => allowed.Contains(p.Key));
}

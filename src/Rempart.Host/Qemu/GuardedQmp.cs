using System.Text.Json.Nodes;

namespace Rempart.Host.Qemu;

/// <summary>
/// A VM's QMP as the rest of the agent sees it: every command passes <see cref="QmpAllowlist"/>
/// first; a refused one never reaches QEMU.
/// </summary>
public sealed class GuardedQmp(QmpClient client, QmpAllowlist allowlist)
{
    public QmpAllowlist Allowlist { get; } = allowlist;

    public QemuVersion Version => client.Version;

    /// <summary>Runs an allowed command; throws <see cref="QmpRefusedException"/> for a refused one.</summary>
    public Task<JsonNode?> ExecuteAsync(string command, JsonObject? arguments = null, TimeSpan? timeout = null, CancellationToken ct = default)
    {
        var decision = Allowlist.Check(command, arguments);
        if (!decision.Allowed)
        {
            throw new QmpRefusedException(decision, command);
        }
        return client.ExecuteAsync(command, arguments, timeout, ct);
    }

    /// <summary>
    /// Adds a QEMU <c>secret</c> object holding <paramref name="key"/> (base64 in the QMP message,
    /// written straight into a buffer zeroed once sent). The caller wipes <paramref name="key"/>.
    /// </summary>
    public async Task AddSecretAsync(string id, ReadOnlyMemory<byte> key, CancellationToken ct = default)
    {
        // The allowlist sees the shape of the command, never the secret.
        var decision = Allowlist.Check("object-add", new JsonObject { ["qom-type"] = "secret", ["id"] = id, ["data"] = "", ["format"] = "base64" });
        if (!decision.Allowed)
        {
            throw new QmpRefusedException(decision, "object-add");
        }
        await client.ExecuteSensitiveAsync("object-add", w =>
        {
            w.WriteStartObject();
            w.WriteString("qom-type", "secret");
            w.WriteString("id", id);
            w.WriteBase64String("data", key.Span);
            w.WriteString("format", "base64");
            w.WriteEndObject();
        }, null, ct).ConfigureAwait(false);
    }
}

/// <summary>
/// How a disk reaches a paused QEMU over QMP: the LUKS key as a <c>secret</c> object first, then
/// the block node (<c>qcow2</c> with <c>encrypt.format=luks,encrypt.key-secret=ID</c>, over a
/// <c>file</c> node), then a <c>virtio-blk-pci</c> device in the disk's own root port.
/// </summary>
public static class QemuDiskCommands
{
    /// <summary>The block node and device commands for one disk (the secret is separate: <see cref="GuardedQmp.AddSecretAsync"/>).</summary>
    public static IReadOnlyList<(string Command, JsonObject Arguments)> For(QemuDisk disk)
    {
        var file = new JsonObject { ["driver"] = "file", ["filename"] = disk.Path, ["read-only"] = disk.ReadOnly };
        var node = new JsonObject { ["driver"] = disk.Format, ["node-name"] = disk.Id, ["read-only"] = disk.ReadOnly, ["file"] = file };
        if (disk.LuksSecretId is { } secret)
        {
            node["encrypt"] = new JsonObject { ["format"] = "luks", ["key-secret"] = secret };
        }
        var device = new JsonObject { ["driver"] = "virtio-blk-pci", ["id"] = disk.Id, ["drive"] = disk.Id, ["bus"] = QemuCommandLine.RootPortOf(disk.Id) };
        return [("blockdev-add", node), ("device_add", device)];
    }

    /// <summary>Adds a disk to a paused VM; <paramref name="luksKey"/> is required exactly when the disk has a secret id.</summary>
    public static async Task AddAsync(GuardedQmp qmp, QemuDisk disk, ReadOnlyMemory<byte> luksKey, CancellationToken ct = default)
    {
        if ((disk.LuksSecretId is null) != luksKey.IsEmpty)
        {
            throw new ArgumentException("a LUKS key is given exactly for a disk with a secret id", nameof(luksKey));
        }
        if (disk.LuksSecretId is { } secret)
        {
            await qmp.AddSecretAsync(secret, luksKey, ct).ConfigureAwait(false);
        }
        foreach (var (command, arguments) in For(disk))
        {
            await qmp.ExecuteAsync(command, arguments, null, ct).ConfigureAwait(false);
        }
    }
}

using System.Text;
using System.Text.Json.Nodes;
using Rempart.KeyProtection;

namespace Rempart.Cli;

/// <summary>
/// <c>rempart kp create|show|recover|verify</c>: key protectors on the tenant's side, offline
/// (docs/key-protector.md). <c>create</c> wraps a fresh VM master key for the owner key and for
/// Guardians described by their signed metadata; the VM master key is never printed. <c>recover</c>
/// is the owner's way back to the key without any Guardian.
/// </summary>
internal static class KpCommands
{
    private const string Help = """
        Usage: rempart kp create --owner owner.pub --guardian META.json [--guardian META.json ...]
                                 [--guardian-fingerprint HEX ...] --shielding shielded|encryption-supported
                                 --host-group G [--host-group G ...] --vm-id ID --out vm.kp [--format text|json]
               rempart kp show KP [--format text|json]
               rempart kp recover KP --owner-key owner.key --out FILE|- [--passphrase-file FILE]
               rempart kp verify KP --owner-key owner.key [--passphrase-file FILE] [--format text|json]
               rempart kp export-disk KP --owner-key owner.key --bundle DIR --disk ID --out FILE [--passphrase-file FILE]

          create   a new VM master key, wrapped for the owner and each Guardian's active key; refuses
                   metadata whose signature fails, and with --guardian-fingerprint (the SHA-256 of the
                   Guardian's signing key, obtained out of band) metadata signed by any other key.
                   Never overwrites --out. The VM master key is not printed: recover it with the owner key.
          show     what a key protector says (no secret; its integrity needs the VMK: see verify)
          recover  opens the owner wrap, checks the key protector's integrity, writes the 32-byte VM
                   master key to a new 0600 FILE, or as hex to stdout only with an explicit --out -
          verify   opens the owner wrap and checks integrity; prints nothing secret
        The owner passphrase comes from REMPART_OWNER_PASSPHRASE or --passphrase-file.
        Exit codes: 0 ok, 1 refused (integrity, signature, fingerprint, passphrase), 2 usage or malformed file.

        """;

    public static int Run(string verb, string[] argv)
    {
        var a = new Args(argv, new HashSet<string> { "help" }, new HashSet<string> { "guardian", "guardian-fingerprint", "host-group" });
        if (verb is "--help" or "-h")
        {
            Console.Out.Write(Help);
            return Program.Ok;
        }
        if (Program.ShowHelp(a, Help))
        {
            return Program.Ok;
        }
        return OwnerCommands.Guard(() => verb switch
        {
            "create" => Create(a),
            "show" => Show(a),
            "recover" => Recover(a),
            "export-disk" => ExportDisk(a),
            _ => Verify(a),
        });
    }

    private static int Create(Args a)
    {
        var format = a.Format();
        var ownerPath = a.Require("owner", "owner public key, owner.pub");
        var metadataPaths = a.GetAll("guardian");
        var pins = a.GetAll("guardian-fingerprint").Select(NormalizeFingerprint).ToList();
        var shieldingText = a.Require("shielding", "shielded or encryption-supported");
        var groups = a.GetAll("host-group");
        var vmId = a.Require("vm-id", "VM id");
        var outPath = a.Require("out", "key protector file to write");
        a.EnsureAllUsed();
        NoPositionals(a);
        if (metadataPaths.Count == 0)
        {
            throw new UsageException("missing --guardian (a Guardian's metadata file; repeat for several Guardians)");
        }
        if (groups.Count == 0)
        {
            throw new UsageException("missing --host-group (a host group allowed to run the VM; repeat for several)");
        }
        if (!ReleasePolicy.TryParseShielding(shieldingText, out var shielding))
        {
            throw new UsageException($"--shielding must be shielded or encryption-supported (got '{shieldingText}')");
        }
        if (!KeyIds.IsName(vmId, KeyProtector.MaxVmIdLength))
        {
            throw new UsageException($"--vm-id '{vmId}': 1-{KeyProtector.MaxVmIdLength} ASCII letters, digits, '.', '-' or '_'");
        }
        if (groups.FirstOrDefault(g => !KeyIds.IsName(g)) is { } badGroup)
        {
            throw new UsageException($"--host-group '{badGroup}': 1-64 ASCII letters, digits, '.', '-' or '_'");
        }
        if (groups.Distinct(StringComparer.Ordinal).Count() != groups.Count)
        {
            throw new UsageException("a --host-group is given twice");
        }
        if (File.Exists(outPath))
        {
            return OwnerCommands.Refuse("kp.exists", $"{outPath} exists: refusing to overwrite a key protector (its VM master key would be lost)");
        }

        var owner = OwnerPublicKey.FromPem(OwnerCommands.ReadText(ownerPath, "--owner"));
        var guardians = metadataPaths.Select(p => GuardianMetadata.Parse(OwnerCommands.ReadBytes(p, "--guardian"))).ToList();
        if (guardians.GroupBy(g => g.GuardianId).FirstOrDefault(g => g.Count() > 1) is { } twice)
        {
            throw new UsageException($"Guardian '{twice.Key}' is given twice");
        }
        if (pins.Count > 0)
        {
            foreach (var g in guardians.Where(g => !pins.Contains(g.Fingerprint)))
            {
                g.RequireFingerprint(pins[0]); // throws metadata.fingerprint naming the fingerprint it has
            }
            if (pins.FirstOrDefault(p => !guardians.Any(g => g.Fingerprint == p)) is { } unused)
            {
                return OwnerCommands.Refuse("metadata.fingerprint", $"no Guardian metadata has the fingerprint {unused}");
            }
        }
        else
        {
            Console.Error.WriteLine("warning: Guardian metadata not pinned: compare these fingerprints with the ones the fabric operator gave you, or pass --guardian-fingerprint");
        }

        var (kp, vmk) = KeyProtector.Create(vmId, new ReleasePolicy(shielding, groups), owner, guardians);
        vmk.Dispose();
        OwnerCommands.WriteNew(outPath, [.. kp.ToJsonBytes(), (byte)'\n'], secret: false);

        var json = Describe(kp);
        json["out"] = outPath;
        json["guardianMetadata"] = new JsonArray(guardians.Select(g => (JsonNode)new JsonObject
        {
            ["guardianId"] = g.GuardianId,
            ["name"] = g.Name,
            ["fingerprint"] = g.Fingerprint,
            ["pinned"] = pins.Count > 0,
        }).ToArray());
        var lines = new StringBuilder($"wrote {outPath}\n").Append(DescribeText(kp));
        foreach (var g in guardians)
        {
            lines.Append($"\n  Guardian {g.GuardianId} ({g.Name}): signing-key SHA-256 {g.Fingerprint}{(pins.Count > 0 ? " (pinned)" : " (NOT pinned)")}");
        }
        OwnerCommands.Print(format, json, lines.ToString());
        return Program.Ok;
    }

    private static int Show(Args a)
    {
        var format = a.Format();
        a.EnsureAllUsed();
        var kp = ReadKp(a);
        var json = Describe(kp);
        json["integrityChecked"] = false;
        OwnerCommands.Print(format, json, DescribeText(kp) + "\n  integrity:   not checked here (it needs the VM master key: rempart kp verify KP --owner-key FILE)");
        return Program.Ok;
    }

    private static int Recover(Args a)
    {
        var keyPath = a.Require("owner-key", "owner private key, owner.key");
        var outPath = a.Get("out") ?? throw new UsageException("give --out FILE (a new 0600 file) or --out - (hex on stdout)");
        var kp = ReadKp(a);
        using var owner = OwnerCommands.ReadOwnerKey(a, keyPath);
        a.EnsureAllUsed();
        if (outPath != "-" && File.Exists(outPath))
        {
            return OwnerCommands.Refuse("kp.exists", $"{outPath} exists: refusing to overwrite it");
        }
        using var vmk = kp.RecoverWithOwner(owner);
        if (outPath == "-")
        {
            Console.Out.WriteLine(Convert.ToHexStringLower(vmk.Bytes));
            Console.Error.WriteLine($"key protector {kp.KpId} (VM {kp.VmId}): integrity verified; VM master key written to stdout");
        }
        else
        {
            OwnerCommands.WriteNew(outPath, vmk.Bytes, secret: true);
            Console.Out.WriteLine($"key protector {kp.KpId} (VM {kp.VmId}): integrity verified; VM master key (32 bytes) written to {outPath} (0600)");
        }
        return Program.Ok;
    }

    /// <summary>
    /// The tenant opens one disk of a VM bundle offline with the owner key (no Guardian, no host
    /// TPM): recover the VMK, derive the disk's LUKS key, write the clear image to a new 0600 file.
    /// </summary>
    private static int ExportDisk(Args a)
    {
        var keyPath = a.Require("owner-key", "owner private key, owner.key");
        var bundleDir = a.Require("bundle", "the VM bundle folder (DATA/vms/NAME on the host)");
        var diskId = a.Require("disk", "the disk id (vm status shows them)");
        var outPath = a.Require("out", "a new file for the clear raw image");
        var kp = ReadKp(a);
        using var owner = OwnerCommands.ReadOwnerKey(a, keyPath);
        a.EnsureAllUsed();
        if (File.Exists(outPath))
        {
            return OwnerCommands.Refuse("kp.exists", $"{outPath} exists: refusing to overwrite it");
        }
        Rempart.Host.Vm.VmConfig config;
        try
        {
            config = Rempart.Host.Vm.VmConfig.Parse(OwnerCommands.ReadBytes(Path.Combine(bundleDir, Rempart.Host.Vm.VmBundle.ConfigFile), "vm.json"));
        }
        catch (Rempart.Host.Vm.VmBundleException e)
        {
            return OwnerCommands.Refuse(e.Id, e.Message);
        }
        if (config.VmId != kp.VmId)
        {
            return OwnerCommands.Refuse("kp.vm-mismatch", $"the bundle is VM '{config.VmId}', the key protector protects '{kp.VmId}'");
        }
        var disk = config.Disks.SingleOrDefault(d => d.Id == diskId);
        if (disk is null)
        {
            return OwnerCommands.Refuse("kp.no-disk", $"VM {config.VmId} has no disk '{diskId}' (it has: {string.Join(", ", config.Disks.Select(d => d.Id))})");
        }
        using var vmk = kp.RecoverWithOwner(owner);
        // Created 0600 first: qemu-img keeps an existing file's mode, and this is the tenant's clear data.
        using (new FileStream(outPath, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite }))
        {
        }
        try
        {
            Rempart.Host.Vm.EncryptedDisk.ExportRaw(Path.Combine(bundleDir, disk.File), vmk, disk.Id, outPath);
        }
        catch (Rempart.Host.Vm.VmBundleException e)
        {
            File.Delete(outPath);
            return OwnerCommands.Refuse(e.Id, e.Message);
        }
        Console.Out.WriteLine($"disk {disk.Id} of VM {config.VmId}: {disk.SizeBytes} bytes decrypted with the owner's key to {outPath} (0600)");
        return Program.Ok;
    }

    private static int Verify(Args a)
    {
        var format = a.Format();
        var keyPath = a.Require("owner-key", "owner private key, owner.key");
        var kp = ReadKp(a);
        using var owner = OwnerCommands.ReadOwnerKey(a, keyPath);
        a.EnsureAllUsed();
        using (kp.RecoverWithOwner(owner))
        {
        }
        var json = Describe(kp);
        json["integrityChecked"] = true;
        OwnerCommands.Print(format, json, DescribeText(kp) + "\n  integrity:   ok (owner wrap opens, MAC over every field verifies)");
        return Program.Ok;
    }

    private static KeyProtector ReadKp(Args a)
    {
        if (a.Positionals.Count != 1)
        {
            throw new UsageException("give one key protector file (rempart kp --help)");
        }
        return KeyProtector.Parse(OwnerCommands.ReadBytes(a.Positionals[0], "key protector"));
    }

    private static JsonObject Describe(KeyProtector kp) => new()
    {
        ["version"] = kp.Version,
        ["kpId"] = kp.KpId,
        ["vmId"] = kp.VmId,
        ["createdAt"] = kp.CreatedAt.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture),
        ["shielding"] = ReleasePolicy.ToWire(kp.Policy.Shielding),
        ["hostGroups"] = new JsonArray(kp.Policy.HostGroups.Select(g => (JsonNode)g).ToArray()),
        ["ownerKid"] = kp.Owner.Kid,
        ["guardians"] = new JsonArray(kp.Guardians.Select(g => (JsonNode)new JsonObject { ["guardianId"] = g.GuardianId, ["kid"] = g.Kid }).ToArray()),
        ["algorithm"] = EcdhEsWrap.Algorithm,
    };

    private static string DescribeText(KeyProtector kp) =>
        $"""
        key protector {kp.KpId} (version {kp.Version})
          VM:          {kp.VmId}
          created:     {kp.CreatedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC
          shielding:   {ReleasePolicy.ToWire(kp.Policy.Shielding)}
          host groups: {string.Join(", ", kp.Policy.HostGroups)}
          owner key:   {kp.Owner.Kid}
          guardians:   {string.Join("\n               ", kp.Guardians.Select(g => $"{g.GuardianId} key {g.Kid}"))}
        """;

    private static void NoPositionals(Args a)
    {
        if (a.Positionals.Count > 0)
        {
            throw new UsageException($"unexpected argument '{a.Positionals[0]}'");
        }
    }

    private static string NormalizeFingerprint(string hex)
    {
        var h = hex.Replace(":", "", StringComparison.Ordinal).ToLowerInvariant();
        return h.Length == 64 && h.All(char.IsAsciiHexDigit) ? h : throw new UsageException($"--guardian-fingerprint '{hex}': expected 64 hex digits (SHA-256)");
    }
}

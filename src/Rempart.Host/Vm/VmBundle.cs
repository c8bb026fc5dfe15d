using Rempart.KeyProtection;

namespace Rempart.Host.Vm;

/// <summary>What <c>vm create</c> asks for; the VM id and shielding come from the key protector.</summary>
public sealed record VmSpec(string Name, int MemoryMiB, int Cpus, SecureBootTemplate SecureBoot = SecureBootTemplate.Snakeoil);

/// <summary>One disk for <see cref="VmBundle.AddDisksAsync"/>: imported from <paramref name="Image"/> (its format given, never probed), or new and empty of <paramref name="SizeBytes"/>.</summary>
public sealed record NewDiskSource(string Id, string? Image, string Format, long SizeBytes);

/// <summary>
/// A shielded VM on disk (DESIGN.md §4, docs/vm-bundle.md): a 0700 folder with <c>vm.json</c>,
/// <c>vm.kp</c> (the key protector as given), <c>disks/&lt;id&gt;.qcow2</c> (LUKS AES-256-XTS, key
/// HKDF(VMK, "disk/&lt;id&gt;")), <c>nvram.enc</c> (AES-256-GCM, HKDF(VMK, "nvram")),
/// <c>vtpm/</c> (swtpm state, AES-256-CBC + HMAC, HKDF(VMK, "vtpm")) and <c>snapshots/</c>.
/// Files are 0600 and replaced atomically. Nothing in it opens without the VMK.
/// </summary>
public sealed class VmBundle
{
    public const string ConfigFile = "vm.json";
    public const string KeyProtectorFile = "vm.kp";
    public const string NvramFile = "nvram.enc";
    public const string DisksDir = "disks";
    public const string VtpmDir = "vtpm";
    public const string SnapshotsDir = "snapshots";

    /// <summary>Debian's OVMF variable templates (package ovmf).</summary>
    public static string TemplatePath(SecureBootTemplate t) => t == SecureBootTemplate.Microsoft
        ? "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
        : "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";

    private VmBundle(string directory, VmConfig config, KeyProtector kp)
    {
        Directory = directory;
        Config = config;
        KeyProtector = kp;
    }

    public string Directory { get; }

    public VmConfig Config { get; private set; }

    public KeyProtector KeyProtector { get; }

    public string VtpmStateDir => Path.Combine(Directory, VtpmDir);

    public NvramStore Nvram => new(Path.Combine(Directory, NvramFile), Config.VmId);

    public string DiskPath(string id) => Path.Combine(Directory, Config.Disks.SingleOrDefault(d => d.Id == id)?.File
        ?? throw new VmBundleException("bundle.missing", $"VM {Config.VmId} has no disk '{id}'"));

    /// <summary>
    /// Makes the folder (it must not exist, or be empty) with vm.json, vm.kp and the empty
    /// subfolders. Disks, NVRAM and vTPM follow with the VMK (<see cref="AddDisksAsync"/>,
    /// <see cref="CreateNvram"/>, <see cref="CreateVtpm"/>).
    /// </summary>
    public static VmBundle Create(string directory, VmSpec spec, ReadOnlyMemory<byte> keyProtector, TimeProvider? time = null)
    {
        KeyProtector kp;
        try
        {
            kp = KeyProtector.Parse(keyProtector);
        }
        catch (KeyProtectorException e)
        {
            throw new VmBundleException("bundle.format", $"the key protector does not parse: {e.Message}", e);
        }
        var now = (time ?? TimeProvider.System).GetUtcNow();
        var config = new VmConfig(spec.Name, kp.VmId, spec.MemoryMiB, spec.Cpus, [], spec.SecureBoot, kp.Policy.Shielding,
            new DateTimeOffset(now.UtcTicks - now.UtcTicks % TimeSpan.TicksPerSecond, TimeSpan.Zero)).Validated();
        directory = Path.GetFullPath(directory);
        if (System.IO.Directory.Exists(directory) && System.IO.Directory.EnumerateFileSystemEntries(directory).Any())
        {
            throw new VmBundleException("bundle.exists", $"{directory} exists and is not empty");
        }
        SecureFiles.CreateDirectory(directory);
        foreach (var d in new[] { DisksDir, VtpmDir, SnapshotsDir })
        {
            SecureFiles.CreateDirectory(Path.Combine(directory, d));
        }
        SecureFiles.WriteAtomic(Path.Combine(directory, KeyProtectorFile), keyProtector.Span);
        SecureFiles.WriteAtomic(Path.Combine(directory, ConfigFile), config.ToJsonBytes());
        return new VmBundle(directory, config, kp);
    }

    /// <summary>
    /// Opens a complete bundle, strictly: every file present with owner-only modes, vm.json and
    /// vm.kp well-formed and about the same VM (id, shielding), every disk a LUKS qcow2 of the
    /// configured size. Checks shape only; the VMK is needed to open anything.
    /// </summary>
    public static VmBundle Load(string directory)
    {
        directory = Path.GetFullPath(directory);
        if (!System.IO.Directory.Exists(directory))
        {
            throw new VmBundleException("bundle.missing", $"no VM bundle at {directory}");
        }
        SecureFiles.CheckPrivate(directory, "the bundle folder");
        var config = VmConfig.Parse(ReadFile(directory, ConfigFile));
        KeyProtector kp;
        try
        {
            kp = KeyProtector.Parse(ReadFile(directory, KeyProtectorFile));
        }
        catch (KeyProtectorException e)
        {
            throw new VmBundleException("bundle.format", $"{KeyProtectorFile}: {e.Message}", e);
        }
        if (kp.VmId != config.VmId)
        {
            throw new VmBundleException("bundle.format", $"vm.json names VM '{config.VmId}' but vm.kp protects '{kp.VmId}'");
        }
        if (kp.Policy.Shielding != config.Shielding)
        {
            throw new VmBundleException("bundle.format", $"vm.json says shielding '{ReleasePolicy.ToWire(config.Shielding)}' but vm.kp says '{ReleasePolicy.ToWire(kp.Policy.Shielding)}'");
        }
        foreach (var d in new[] { DisksDir, VtpmDir, SnapshotsDir })
        {
            string p = Path.Combine(directory, d);
            if (!System.IO.Directory.Exists(p))
            {
                throw new VmBundleException("bundle.missing", $"{p} is missing");
            }
            SecureFiles.CheckPrivate(p, d);
        }
        RequireFile(directory, NvramFile);
        NvramStore.Parse(ReadFile(directory, NvramFile));
        RequireFile(directory, Path.Combine(VtpmDir, "tpm2-00.permall"));
        foreach (var d in config.Disks)
        {
            string p = RequireFile(directory, d.File);
            var info = EncryptedDisk.Verify(p);
            if (info.VirtualSize != d.SizeBytes)
            {
                throw new VmBundleException("disk.format", $"{d.File}: {info.VirtualSize} bytes, vm.json says {d.SizeBytes}");
            }
        }
        return new VmBundle(directory, config, kp);
    }

    /// <summary>Refuses a VMK that is not this bundle's (the key protector's MAC: <c>kp.integrity</c>).</summary>
    public void CheckKey(VmMasterKey vmk) => KeyProtector.VerifyIntegrity(vmk);

    /// <summary>
    /// Makes several disks at once and records them in vm.json in the given order, all or none.
    /// Each qemu-img pays QEMU's fixed LUKS calibration (~1.8 CPU-s, docs/vm-bundle.md "Fixed cost
    /// and cost per byte"), so up to one disk per core is made at a time. The first failure cancels
    /// the others, removes every file this call made and is rethrown; vm.json is then unchanged.
    /// </summary>
    /// <remarks><c>progress</c> is called with (disk id, percent) as an import advances; a new empty disk reports 100 when made.</remarks>
    public async Task AddDisksAsync(IReadOnlyList<NewDiskSource> disks, VmMasterKey vmk, Action<string, double>? progress = null, CancellationToken cancel = default)
    {
        var planned = new List<VmDisk>();
        foreach (var d in disks)
        {
            var size = d.Image is null ? d.SizeBytes : EncryptedDiskSource.VirtualSize(d.Image, d.Format);
            var disk = NewDisk(d.Id, size, vmk);
            if (planned.Any(p => p.Id == disk.Id))
            {
                throw new VmBundleException("bundle.exists", $"disk '{d.Id}' is given twice");
            }
            planned.Add(disk);
        }
        _ = (Config with { Disks = [.. Config.Disks, .. planned] }).Validated();

        using var slots = new SemaphoreSlim(Math.Max(1, Environment.ProcessorCount));
        var made = new System.Collections.Concurrent.ConcurrentBag<string>();
        try
        {
            await ParallelWork.AllAsync(disks.Select((d, i) => (Func<CancellationToken, Task>)(async ct =>
            {
                await slots.WaitAsync(ct).ConfigureAwait(false);
                try
                {
                    string path = Path.Combine(Directory, planned[i].File);
                    made.Add(path);
                    if (d.Image is null)
                    {
                        EncryptedDisk.Create(path, planned[i].SizeBytes, vmk, d.Id, ct);
                        progress?.Invoke(d.Id, 100);
                    }
                    else
                    {
                        EncryptedDisk.Import(d.Image, d.Format, path, vmk, d.Id,
                            progress is null ? null : new Reporter(p => progress(d.Id, p)), ct);
                    }
                }
                finally
                {
                    slots.Release();
                }
            })), cancel).ConfigureAwait(false);
        }
        catch
        {
            foreach (var path in made)
            {
                File.Delete(path);
            }
            throw;
        }
        var next = Config with { Disks = [.. Config.Disks, .. planned] };
        SecureFiles.WriteAtomic(Path.Combine(Directory, ConfigFile), next.ToJsonBytes());
        Config = next;
    }

    /// <summary>An <see cref="IProgress{T}"/> that calls back on the reporting thread (no synchronisation context hop).</summary>
    private sealed class Reporter(Action<double> report) : IProgress<double>
    {
        public void Report(double value) => report(value);
    }

    /// <summary>nvram.enc from the VM's Secure Boot template (or <paramref name="templatePath"/>).</summary>
    public void CreateNvram(VmMasterKey vmk, string? templatePath = null)
    {
        CheckKey(vmk);
        Nvram.CreateFromTemplate(vmk, templatePath ?? TemplatePath(Config.SecureBoot));
    }

    /// <summary>The vTPM, manufactured by swtpm_setup with its state encrypted.</summary>
    public void CreateVtpm(VmMasterKey vmk)
    {
        CheckKey(vmk);
        VtpmState.Create(VtpmStateDir, vmk);
    }

    /// <summary>Starts this VM's swtpm (see <see cref="VtpmProcess.Start"/>).</summary>
    public VtpmProcess StartVtpm(VmMasterKey vmk, string runDir, bool dataSocket = false) =>
        VtpmProcess.Start(VtpmStateDir, vmk, runDir, dataSocket);

    private VmDisk NewDisk(string id, long sizeBytes, VmMasterKey vmk)
    {
        CheckKey(vmk);
        if (!VmKeys.IsValidLabel("disk/" + id))
        {
            throw new VmBundleException("bundle.format", $"'{id}' is not a disk id (1-64 letters, digits, '.', '-', '_')");
        }
        if (Config.Disks.Any(d => d.Id == id))
        {
            throw new VmBundleException("bundle.exists", $"VM {Config.VmId} already has a disk '{id}'");
        }
        var disk = new VmDisk(id, sizeBytes);
        _ = (Config with { Disks = [.. Config.Disks, disk] }).Validated();
        if (File.Exists(Path.Combine(Directory, disk.File)))
        {
            throw new VmBundleException("bundle.exists", $"{disk.File} already exists");
        }
        return disk;
    }

    private static string RequireFile(string directory, string name)
    {
        string p = Path.Combine(directory, name);
        if (!File.Exists(p))
        {
            throw new VmBundleException("bundle.missing", $"{p} is missing");
        }
        SecureFiles.CheckPrivate(p, name);
        return p;
    }

    private static byte[] ReadFile(string directory, string name)
    {
        string p = RequireFile(directory, name);
        if (new FileInfo(p).Length > 1 << 20)
        {
            throw new VmBundleException("bundle.format", $"{name} is larger than 1 MiB");
        }
        return File.ReadAllBytes(p);
    }
}

using Rempart.Host.Agent;

namespace Rempart.AgentService;

/// <summary>
/// <c>rempart-host serve --guardian URL --tpm ADDR --data DIR [--guardian-fingerprint HEX]
/// [--eventlog FILE] [--period SECONDS] [--socket PATH] [--hostname NAME]</c>.
/// </summary>
public static class Program
{
    private const string Help = """
        Usage: rempart-host serve --guardian URL --tpm ADDR --data DIR [--guardian-fingerprint HEX]
                                  [--eventlog FILE] [--period SECONDS] [--socket PATH] [--hostname NAME]
                                  [--run-dir DIR] [--shm-dir DIR] [--qemu PATH] [--firmware PATH]
                                  [--migration-listen ADDR:PORT]

        Runs the host agent: enrols this host with the Guardian on first run (the host then waits
        for an admin's approval), attests every period (default 60 s), keeps a fresh health token
        and binding key, and serves a local API on a unix socket only root can open
        (default /run/rempart/agent.sock; 'rempart host status' reads it).
          --eventlog FILE   default /sys/kernel/security/tpm0/binary_bios_measurements
          --run-dir DIR     VMs' run folders (sockets, pid files), default /run/rempart-vms
          --shm-dir DIR     memory-backed folder for running VMs' clear UEFI variables, default /dev/shm
          --migration-listen ADDR:PORT
                            accept live migrations from other attested hosts on this TCP address
                            (none by default); every byte after the handshake is encrypted
          --qemu PATH       default /usr/bin/qemu-system-x86_64
          --firmware PATH   OVMF code with Secure Boot, default /usr/share/OVMF/OVMF_CODE_4M.secboot.fd
        VM bundles live in DATA/vms, the agent's audit log in DATA/audit.jsonl. VMs keep running
        when the agent stops; it finds them again when it starts.

        """;

    public static async Task<int> Main(string[] args)
    {
        if (args.Length == 0 || args[0] != "serve")
        {
            Console.Out.Write(Help);
            return args.Length > 0 && args[0] is "--help" or "-h" ? 0 : 2;
        }
        try
        {
            var (options, socket, vms) = Parse(args[1..]);
            await using var app = AgentServer.Build(options, socket, vms);
            await app.StartAsync();
            Console.Out.WriteLine($"rempart-host: data in {options.DataDir}, local API on {socket}, attesting every {options.Period.TotalSeconds:0} s to {options.Guardian}");
            await app.WaitForShutdownAsync();
            return 0;
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 2;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or InvalidOperationException)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 3;
        }
    }

    internal static (HostAgentOptions Options, string Socket, VmHostOptions Vms) Parse(string[] args)
    {
        string? guardian = null, tpm = null, data = null, pin = null, socket = null, hostname = null, runDir = null, qemu = null, firmware = null, shm = null;
        System.Net.IPEndPoint? migration = null;
        string eventlog = "/sys/kernel/security/tpm0/binary_bios_measurements";
        int period = 60;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--guardian": guardian = Next(); break;
                case "--tpm": tpm = Next(); break;
                case "--data": data = Next(); break;
                case "--guardian-fingerprint": pin = Next(); break;
                case "--eventlog": eventlog = Next(); break;
                case "--socket": socket = Next(); break;
                case "--hostname": hostname = Next(); break;
                case "--run-dir": runDir = Path.GetFullPath(Next()); break;
                case "--shm-dir": shm = Path.GetFullPath(Next()); break;
                case "--migration-listen":
                    var m = Next();
                    migration = System.Net.IPEndPoint.TryParse(m, out var ep) && ep.Port != 0 ? ep : throw new ArgumentException($"--migration-listen '{m}' is not ADDR:PORT");
                    break;
                case "--qemu": qemu = Next(); break;
                case "--firmware": firmware = Path.GetFullPath(Next()); break;
                case "--period":
                    var v = Next();
                    period = int.TryParse(v, out var p) && p is >= 1 and <= 3600 ? p : throw new ArgumentException($"--period '{v}' is not 1-3600 seconds");
                    break;
                default: throw new ArgumentException($"unknown option {args[i]} (see --help)");
            }
        }
        if (guardian is null || !Uri.TryCreate(guardian.EndsWith('/') ? guardian : guardian + "/", UriKind.Absolute, out var url) || url.Scheme is not ("http" or "https"))
        {
            throw new ArgumentException("missing or bad --guardian URL (https, or http on loopback)");
        }
        _ = tpm ?? throw new ArgumentException("missing --tpm ADDR (device:/dev/tpmrm0, swtpm:tcp:HOST:PORT, swtpm:unix:PATH)");
        _ = data ?? throw new ArgumentException("missing --data DIR");
        var full = Path.GetFullPath(data);
        var vms = VmHostOptions.Under(full, runDir ?? "/run/rempart-vms");
        vms = vms with { Qemu = qemu ?? vms.Qemu, FirmwareCode = firmware ?? vms.FirmwareCode, ShmDir = shm ?? vms.ShmDir, MigrationListen = migration };
        return (new HostAgentOptions(url, pin, tpm, full, eventlog, hostname ?? Environment.MachineName, TimeSpan.FromSeconds(period)),
            socket ?? AgentSocket.DefaultPath, vms);
    }
}

using Rempart.Tpm;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Transport;

namespace Rempart.Cli;

/// <summary>
/// <c>rempart</c>: the command-line front end. Exit codes: 0 success; 1 a verification said
/// "invalid" (or an operation was refused); 2 usage error or unusable input; 3 the TPM or a
/// service could not be reached or failed.
/// </summary>
public static class Program
{
    public const int Ok = 0;
    public const int Invalid = 1;
    public const int Usage = 2;
    public const int Failure = 3;

    private const string TopHelp = """
        rempart — shielded VMs for KVM/QEMU

        Usage: rempart <group> <verb> [options]

        TPM (host TPM or swtpm):
          tpm info    --tpm ADDR [--format text|json]       manufacturer, firmware, algorithms, PCR banks
          tpm pcrs    --tpm ADDR [--bank B] [--format text|json]
                                                            PCR values of every allocated bank
          tpm ek      --tpm ADDR [--type rsa|ecc] [--format text|json|pem]
                                                            endorsement key and its certificate
          tpm quote   --tpm ADDR --nonce HEX --pcrs BANK:LIST[+BANK:LIST] --out DIR [--ak-type rsa|ecc]
                                                            quote with the attestation key, in tpm2-tools formats

          tpm replay-boot --tpm ADDR --eventlog FILE [--force]
                                                            extend a (software) TPM with a real boot's digests

        Verification (no TPM needed):
          quote verify --ak FILE --msg FILE --sig FILE --nonce HEX [--pcrs FILE] [--format text|json]
          eventlog show FILE [--format text|json]          events, digests and decoded data
          eventlog replay FILE [--format text|json]        the PCR values a log produces
          eventlog verify --log FILE --ak FILE --msg FILE --sig FILE --nonce HEX [--pcrs FILE]
                                                            quote check plus replay, a verdict per PCR

        Guardian (attestation service):
          guardian serve --data DIR [options]                       run the Guardian (rempart guardian serve --help)
          host serve --guardian URL --tpm ADDR --data DIR [...]    run the host agent (rempart host serve --help)
          host status [--socket PATH]                               the local agent's view: attested? token valid?
          host audit [--socket PATH]                                the agent's audit log of this host's VMs
          host attest --guardian URL --tpm ADDR [--eventlog FILE]   enrol (first time) and attest once
          host list | host show ID | host approve ID --group G | host remove ID   admin, with --token-file FILE
          host allow-ek --ek-public FILE | host disallow-ek NAME | host allowed-eks   TPMs without EK certificate
          hostgroup create NAME [--approve-ek-issuer DN] | update NAME | delete NAME | list
          token create NAME --role fabric-admin|tenant|auditor | token list | token revoke ID   API tokens
          policy create|list|assign|test|baseline                   policies (rempart policy --help)
          audit verify | audit export [--from SEQ]                  audit log: verify its hash chain / export JSON lines (--token-file FILE)

        Shielded VMs (asked of the local host agent; rempart vm --help):
          vm create NAME --from IMAGE --kp KP [--memory MIB] [--disk ID=IMAGE|ID:SIZE]...   encrypted bundle
          vm start NAME | vm stop NAME | vm kill NAME               attested release, then QEMU; stop re-encrypts
          vm status NAME | vm list | vm console NAME                 console refused for shielded VMs (audited)
          vm snapshot NAME [--name S] | vm snapshot list NAME | vm snapshot delete NAME S
                                                            sealed memory/device state, disks, vTPM, UEFI variables
          vm restore NAME S                                         release on a healthy host; verified before QEMU starts
          vm migrate NAME --to ADDR:PORT                            live, to another attested host, over an encrypted channel
          vm export NAME --out FILE | vm import FILE                a stopped VM's bundle (all ciphertext) to another host
          vm delete NAME                                            a stopped VM removed, snapshots included

        Tenant (offline, docs/key-protector.md):
          owner create --out DIR                                    owner key (owner.key encrypted, owner.pub)
          kp create --owner owner.pub --guardian META.json --shielding S --host-group G --vm-id ID --out vm.kp
          kp show KP | kp verify KP --owner-key owner.key           what a key protector says / check its integrity
          kp recover KP --owner-key owner.key --out FILE|-          the owner recovers the VM master key
          kp export-disk KP --owner-key owner.key --bundle DIR --disk ID --out FILE   the owner opens a VM disk offline
          guardian metadata --guardian URL [--out FILE]            the Guardian's signed public keys, for kp create
          kp releases KP --guardian URL --token-file FILE          where and when this VM's key was released (or refused)
          kp rewrap KP --out NEW --guardian URL --token-file FILE  after a Guardian key rotation: re-wrap for the active key

        TPM addresses: device:/dev/tpmrm0, swtpm:tcp:HOST:PORT, swtpm:unix:PATH
        (--tpm may be omitted when REMPART_TPM is set).

        Exit codes: 0 ok, 1 invalid/refused, 2 usage or unusable input, 3 TPM or service failure.
        Run 'rempart <group> <verb> --help' for details.
        """;

    public static int Main(string[] argv)
    {
        Console.OutputEncoding = System.Text.Encoding.UTF8;
        try
        {
            if (argv.Length == 0 || argv[0] is "--help" or "-h" or "help")
            {
                Console.Out.Write(TopHelp);
                return argv.Length == 0 ? Usage : Ok;
            }
            if (argv[0] == "--version" || argv[0] == "version")
            {
                Console.Out.WriteLine("rempart " + typeof(Program).Assembly.GetName().Version);
                return Ok;
            }
            string group = argv[0];
            string verb = argv.Length > 1 ? argv[1] : "";
            var rest = argv.Skip(2).ToArray();
            return (group, verb) switch
            {
                ("tpm", "info") => TpmCommands.Info(rest),
                ("tpm", "pcrs") => TpmCommands.Pcrs(rest),
                ("tpm", "ek") => TpmCommands.Ek(rest),
                ("tpm", "quote") => TpmCommands.Quote(rest),
                ("tpm", "replay-boot") => EventLogCommands.ReplayBoot(rest),
                ("quote", "verify") => QuoteCommands.Verify(rest),
                ("eventlog", "show") => EventLogCommands.Show(rest),
                ("eventlog", "replay") => EventLogCommands.Replay(rest),
                ("eventlog", "verify") => EventLogCommands.Verify(rest),
                ("host", "attest") => HostCommands.Attest(rest).GetAwaiter().GetResult(),
                ("policy", "create" or "list" or "assign" or "test" or "baseline") => PolicyCommands.Run(verb, rest).GetAwaiter().GetResult(),
                ("host", "list" or "show" or "approve" or "remove") or ("hostgroup", "create" or "list" or "update" or "delete") =>
                    HostCommands.Admin($"{group} {verb}", rest).GetAwaiter().GetResult(),
                ("host", "allow-ek" or "disallow-ek" or "allowed-eks") or ("token", "create" or "list" or "revoke") =>
                    FabricCommands.Run($"{group} {verb}", rest).GetAwaiter().GetResult(),
                ("guardian", "serve") => GuardianCommands.Serve(rest),
                ("host", "serve") => AgentCommands.Serve(rest),
                ("host", "status") => AgentCommands.Status(rest).GetAwaiter().GetResult(),
                ("host", "audit") => VmCommands.Audit(rest).GetAwaiter().GetResult(),
                ("vm", "snapshot" or "restore" or "export" or "import" or "delete" or "migrate") => VmSnapshotCommands.Run(verb, rest).GetAwaiter().GetResult(),
                ("vm", _) => VmCommands.Run(verb, rest).GetAwaiter().GetResult(),
                ("guardian", "metadata") => GuardianCommands.Metadata(rest).GetAwaiter().GetResult(),
                ("kp", "releases") => GuardianCommands.Releases(rest).GetAwaiter().GetResult(),
                ("kp", "rewrap") => GuardianCommands.Rewrap(rest).GetAwaiter().GetResult(),
                ("audit", "verify" or "export") => AuditCommands.Run(verb, rest).GetAwaiter().GetResult(),
                ("owner", "create" or "--help" or "-h") => OwnerCommands.Create(argv.Skip(1).ToArray()),
                ("kp", "create" or "show" or "recover" or "verify" or "export-disk" or "--help" or "-h") => KpCommands.Run(verb, rest),
                _ => throw new UsageException($"unknown command '{string.Join(' ', argv.Take(2))}' (see rempart --help)"),
            };
        }
        catch (Exception e) when (ExitCodeFor(e) is int code)
        {
            // One line, no stack trace: the message names what was wrong.
            Console.Error.WriteLine("error: " + e.Message);
            return code;
        }
    }

    /// <summary>The documented exit code for an expected failure; null lets anything else crash loudly.</summary>
    private static int? ExitCodeFor(Exception e) => e switch
    {
        UsageException or TpmFormatException or IOException and not TpmTransportException or UnauthorizedAccessException => Usage,
        TpmException or TpmTransportException or Rempart.Tpm.Sessions.TpmSessionException => Failure,
        Rempart.Host.Attestation.EvidenceCollectionException or Rempart.Host.Guardian.GuardianException => Failure,
        FormatException => Usage,
        _ => null,
    };

    /// <summary>Prints a command's help when --help was given.</summary>
    internal static bool ShowHelp(Args a, string help)
    {
        if (!a.Help)
        {
            return false;
        }
        Console.Out.Write(help);
        return true;
    }
}

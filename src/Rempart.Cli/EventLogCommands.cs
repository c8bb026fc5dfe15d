using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.Attestation.EventLog;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;

namespace Rempart.Cli;

/// <summary><c>rempart eventlog …</c> and <c>rempart tpm replay-boot</c>.</summary>
internal static class EventLogCommands
{
    private static readonly HashSet<string> Flags = ["help", "force"];

    internal static ParsedEventLog ReadLog(string path)
    {
        if (!File.Exists(path))
        {
            throw new UsageException($"event log {path}: no such file");
        }
        var len = new FileInfo(path).Length;
        if (len > EventLogParser.MaxLogSize)
        {
            throw new UsageException($"event log {path}: {len} bytes is more than the {EventLogParser.MaxLogSize} a log may have");
        }
        try
        {
            return EventLogParser.Parse(File.ReadAllBytes(path));
        }
        catch (EventLogFormatException e)
        {
            throw new UsageException($"event log {path}: {e.Message}");
        }
    }

    public static int Show(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, "Usage: rempart eventlog show FILE [--format text|json]\n\nPrints every event of a TCG event log (binary_bios_measurements): number, PCR, type, digests and decoded data.\nEvent data is untrusted until `eventlog verify` binds the log to a quote.\n"))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var path = a.Positionals.Count == 1 ? a.Positionals[0] : throw new UsageException("give one event log FILE");
        a.EnsureAllUsed();
        var log = ReadLog(path);
        if (format == "json")
        {
            var events = new JsonArray();
            foreach (var e in log.Events)
            {
                var digests = new JsonObject();
                foreach (var d in e.Digests)
                {
                    digests[TpmHash.ToName(d.Algorithm)] = Convert.ToHexStringLower(d.Digest.Span);
                }
                events.Add(new JsonObject
                {
                    ["number"] = e.Number,
                    ["offset"] = e.Offset,
                    ["pcr"] = e.Pcr,
                    ["type"] = TcgEventTypeNames.Name(e.UntrustedType),
                    ["typeValue"] = (uint)e.UntrustedType,
                    ["digests"] = digests,
                    ["digestCoversData"] = EventDataDigests.Check(e).ToString(),
                    ["data"] = EventDataView.Json(e),
                });
            }
            var root = new JsonObject
            {
                ["format"] = log.Format == EventLogFormat.CryptoAgile ? "crypto-agile" : "sha1",
                ["banks"] = new JsonArray(log.Banks.Select(b => (JsonNode)TpmHash.ToName(b)).ToArray()),
                ["events"] = events,
            };
            Console.Out.WriteLine(root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return Program.Ok;
        }
        Console.Out.WriteLine($"{path}: {(log.Format == EventLogFormat.CryptoAgile ? "crypto-agile" : "SHA-1")} log, banks {string.Join(", ", log.Banks.Select(TpmHash.ToName))}, {log.Events.Count} events");
        foreach (var e in log.Events)
        {
            string pcr = e.Pcr == 0xFFFFFFFF ? "-1" : e.Pcr.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var check = EventDataDigests.Check(e) switch
            {
                DataDigestStatus.Mismatch => "  [digest does NOT match data]",
                _ => "",
            };
            Console.Out.WriteLine($"#{e.Number,-4} PCR {pcr,-2} {TcgEventTypeNames.Name(e.UntrustedType)}{check}");
            foreach (var d in e.Digests)
            {
                Console.Out.WriteLine($"      {TpmHash.ToName(d.Algorithm),-7} {Convert.ToHexStringLower(d.Digest.Span)}");
            }
            Console.Out.WriteLine($"      {EventDataView.Text(e)}");
        }
        return Program.Ok;
    }

    public static int Replay(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, "Usage: rempart eventlog replay FILE [--format text|json]\n\nThe PCR values the log produces (PFP replay rules), only the PCRs it extends.\nJSON: {\"banks\": {\"sha256\": {\"0\": \"<hex>\", …}}}\n"))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var path = a.Positionals.Count == 1 ? a.Positionals[0] : throw new UsageException("give one event log FILE");
        a.EnsureAllUsed();
        var replay = EventLogReplay.Replay(ReadLog(path));
        if (format == "json")
        {
            Console.Out.WriteLine(PcrJson.Write(replay.Banks));
            return Program.Ok;
        }
        foreach (var (bank, pcrs) in replay.Banks.OrderBy(kv => kv.Key))
        {
            Console.Out.WriteLine($"{TpmHash.ToName(bank)}:");
            foreach (var (i, v) in pcrs)
            {
                Console.Out.WriteLine($"  {i,2} : {Convert.ToHexStringLower(v)}");
            }
        }
        foreach (var n in replay.Notes)
        {
            Console.Error.WriteLine($"note: {n.Id}: {n.Message}");
        }
        return Program.Ok;
    }

    public static int Verify(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, """
            Usage: rempart eventlog verify --log FILE --ak FILE --msg FILE --sig FILE --nonce HEX [--pcrs FILE] [--format text|json]

            Verifies the quote (signature, magic, nonce, PCR digest), then replays the log and gives a
            verdict for every quoted PCR. Without --pcrs, the replayed values must hash to the quoted digest.
            Exit: 0 quote valid and every quoted PCR explained by the log; 1 otherwise; 2 unusable input.

            """))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var log = ReadLog(a.Require("log", "event log file"));
        var ak = QuoteCommands.ReadAk(a.Require("ak", "AK public key"));
        var msg = QuoteCommands.Read(a.Require("msg", "quote message"), "--msg");
        var sig = QuoteCommands.ReadSignature(a.Require("sig", "quote signature"));
        var nonce = TpmCommands.ParseHex(a.Require("nonce", "the nonce the quote must carry"), "--nonce");
        var pcrsPath = a.Get("pcrs");
        a.EnsureAllUsed();
        var claimed = pcrsPath is null ? null : QuoteCommands.ReadPcrs(pcrsPath);
        var replay = EventLogReplay.Replay(log);
        using var key = new VerificationKey(ak);
        var quoted = QuotedPcrs.Verify(key, msg, sig, nonce, claimed, out var quoteResult, replay);
        LogVerification? verification = quoted is null ? null : EventLogVerifier.Verify(log, quoted);
        bool ok = quoted is not null && verification!.AllMatched;

        if (format == "json")
        {
            var o = new JsonObject
            {
                ["valid"] = ok,
                ["quote"] = new JsonObject
                {
                    ["valid"] = quoteResult.Valid,
                    ["failures"] = new JsonArray(quoteResult.Failures.Select(f => (JsonNode)new JsonObject { ["id"] = f.Id, ["message"] = f.Message }).ToArray()),
                },
                ["pcrs"] = verification is null ? null : new JsonArray(verification.Verdicts.Select(v => (JsonNode)new JsonObject
                {
                    ["id"] = v.Id,
                    ["bank"] = TpmHash.ToName(v.Bank),
                    ["pcr"] = v.Pcr,
                    ["matched"] = v.Matched,
                    ["quoted"] = Convert.ToHexStringLower(v.Quoted),
                    ["replayed"] = Convert.ToHexStringLower(v.Replayed),
                    ["quirk"] = v.Quirk,
                }).ToArray()),
                ["digestMismatchEvents"] = verification is null ? null : new JsonArray(verification.DigestMismatchEvents.Select(n => (JsonNode)n).ToArray()),
                ["notes"] = new JsonArray(replay.Notes.Select(n => (JsonNode)new JsonObject { ["event"] = n.EventNumber, ["id"] = n.Id, ["message"] = n.Message }).ToArray()),
            };
            Console.Out.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return ok ? Program.Ok : Program.Invalid;
        }
        if (quoted is null)
        {
            Console.Out.WriteLine("invalid: the quote does not verify, so the log cannot be trusted:");
            foreach (var f in quoteResult.Failures)
            {
                Console.Out.WriteLine($"  {f.Id}: {f.Message}");
            }
            return Program.Invalid;
        }
        Console.Out.WriteLine("quote: valid (signature, magic, nonce, PCR digest)");
        foreach (var v in verification!.Verdicts.OrderBy(v => v.Bank).ThenBy(v => v.Pcr))
        {
            string verdict = v.Matched ? (v.Quirk is null ? "ok" : $"ok through {v.Quirk}") : "MISMATCH";
            Console.Out.WriteLine($"  {TpmHash.ToName(v.Bank),-6} PCR {v.Pcr,2}: {verdict}");
            if (!v.Matched)
            {
                Console.Out.WriteLine($"      quoted   {Convert.ToHexStringLower(v.Quoted)}");
                Console.Out.WriteLine($"      replayed {(v.Replayed.Length == 0 ? "(bank not in the log)" : Convert.ToHexStringLower(v.Replayed))}");
            }
        }
        foreach (var n in verification.DigestMismatchEvents)
        {
            Console.Out.WriteLine($"  event {n}: its digest does not match its data (decoded data not trusted)");
        }
        Console.Out.WriteLine(ok ? "valid: every quoted PCR is explained by the log" : $"invalid: {verification.Mismatched.Count()} quoted PCR value(s) not explained by the log");
        return ok ? Program.Ok : Program.Invalid;
    }

    public static int ReplayBoot(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, """
            Usage: rempart tpm replay-boot --tpm ADDR --eventlog FILE [--force]

            Extends a TPM's PCRs with the digests of a real event log, so a swtpm plays a host that
            booted that firmware (for tests and demos). The PCRs must be at their reset values.
            Refuses a device: TPM (a real host's PCRs) unless --force.

            """))
        {
            return Program.Ok;
        }
        var addr = a.Get("tpm") ?? Environment.GetEnvironmentVariable("REMPART_TPM") ?? "";
        bool force = a.Flag("force");
        if (addr.StartsWith("device:", StringComparison.Ordinal) && !force)
        {
            throw new UsageException("refusing to extend the PCRs of a hardware TPM (device:…): pass --force if you really mean it");
        }
        var log = ReadLog(a.Require("eventlog", "event log file"));
        using var c = TpmCommands.Open(a);
        a.EnsureAllUsed();
        var allocated = c.GetPcrBanks().Selections.Where(s => s.Pcrs.Count > 0).Select(s => s.Hash).ToHashSet();
        var banks = log.Banks.Where(allocated.Contains).ToList();
        if (banks.Count == 0)
        {
            throw new UsageException($"the log's banks ({string.Join(", ", log.Banks.Select(TpmHash.ToName))}) are not allocated in this TPM ({string.Join(", ", allocated.Select(TpmHash.ToName))})");
        }
        var current = c.PcrRead(new TpmlPcrSelection(banks.Select(b => new TpmsPcrSelection(b, Enumerable.Range(0, 24).ToList())).ToList()));
        foreach (var (bank, pcrs) in current.Banks)
        {
            foreach (var (i, v) in pcrs.Where(kv => kv.Key < 16))
            {
                if (!v.AsSpan().SequenceEqual(EventLogReplay.Initial(bank, i)) && !force)
                {
                    throw new UsageException($"PCR {TpmHash.ToName(bank)}:{i} is not at its reset value: replay-boot needs a freshly started TPM (or --force)");
                }
            }
        }
        var replay = EventLogReplay.Replay(log);
        if (replay.StartupLocality != 0)
        {
            Console.Error.WriteLine($"warning: the log starts PCR 0 at locality {replay.StartupLocality}; this TPM started at locality 0, so PCR 0 will differ");
        }
        int extended = Rempart.Host.Attestation.BootReplay.Extend(c, log);
        Console.Out.WriteLine($"extended {extended} events into {string.Join(", ", banks.Select(TpmHash.ToName))} of {c.Address}");
        return Program.Ok;
    }
}

using System.Globalization;
using Rempart.Attestation.EventLog;
using Rempart.Host.Attestation;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;

namespace Rempart.LoadGen;

/// <summary>
/// The boot a simulated host went through: a real firmware event log and the PCR values its
/// replay gives (<see cref="EventLogReplay"/>, PFP §10.3 — the same replay the Guardian runs),
/// for all 24 PCRs of every bank the log declares and .NET can hash. A PCR the log never
/// extends keeps its value after TPM2_Startup(CLEAR) (<see cref="EventLogReplay.Initial"/>).
/// Immutable: every simulated host that booted this log shares one.
/// </summary>
public sealed class SimulatedBoot
{
    private readonly Dictionary<TpmAlgId, byte[][]> _values = [];

    public SimulatedBoot(byte[] eventLog)
    {
        ArgumentNullException.ThrowIfNull(eventLog);
        EventLog = eventLog;
        EventLogBase64 = Convert.ToBase64String(eventLog);
        var parsed = EventLogParser.Parse(eventLog);
        var replay = EventLogReplay.Replay(parsed);
        foreach (var note in replay.Notes.Where(n => n.Id == "eventlog.replay.unreplayable"))
        {
            throw new ArgumentException($"this log cannot play a host's boot: {note.Message}");
        }
        foreach (var bank in replay.Banks.Keys.Order())
        {
            var values = new byte[EventLogReplay.PcrCount][];
            for (int pcr = 0; pcr < values.Length; pcr++)
            {
                values[pcr] = replay.Banks[bank].TryGetValue(pcr, out var v)
                    ? v
                    : EventLogReplay.Initial(bank, pcr, pcr == 0 ? replay.StartupLocality : (byte)0);
            }
            _values[bank] = values;
        }
        if (!_values.ContainsKey(TpmAlgId.Sha256))
        {
            throw new ArgumentException("the log has no sha256 bank: the Guardian requires sha256 PCRs in every quote");
        }
        Banks = [.. _values.Keys];
        QuoteSelection = new TpmlPcrSelection(Banks.Select(b => new TpmsPcrSelection(b, Enumerable.Range(0, EventLogReplay.PcrCount).ToArray())).ToList());
        // A quote's pcrDigest uses the signing scheme's hash: SHA-256 for the ECDSA-SHA256 AK.
        PcrDigest = PcrComposite.Digest(TpmAlgId.Sha256, QuoteSelection, Value);
        BindingPolicy = EvidenceCollector.BindingPolicy(EvidenceCollector.DefaultBindingPcrs, Value);
        WirePcrs = Banks.ToDictionary(
            TpmHash.ToName,
            b => Enumerable.Range(0, EventLogReplay.PcrCount).ToDictionary(p => p.ToString(CultureInfo.InvariantCulture), p => Convert.ToHexStringLower(_values[b][p])));
    }

    /// <summary>The event log as the firmware wrote it (sent with every attestation).</summary>
    public byte[] EventLog { get; }

    /// <summary>The event log as evidence carries it (base64), encoded once for every host.</summary>
    public string EventLogBase64 { get; }

    /// <summary>The banks quoted, in TPM_ALG_ID order.</summary>
    public IReadOnlyList<TpmAlgId> Banks { get; }

    /// <summary>All 24 PCRs of every bank: what the Guardian requires a quote to cover.</summary>
    public TpmlPcrSelection QuoteSelection { get; }

    /// <summary>SHA-256 over the selected PCR values in selection order (TPMS_QUOTE_INFO.pcrDigest).</summary>
    public byte[] PcrDigest { get; }

    /// <summary>The binding key's authPolicy: PolicyPCR over sha256 PCRs 0–7, as <see cref="EvidenceCollector"/> computes it.</summary>
    public byte[] BindingPolicy { get; }

    /// <summary>The PCR values as evidence carries them: bank name → index → lowercase hex.</summary>
    public Dictionary<string, Dictionary<string, string>> WirePcrs { get; }

    /// <summary>A PCR value, or null for a bank this boot does not have.</summary>
    public byte[]? Value(TpmAlgId bank, int pcr) =>
        _values.TryGetValue(bank, out var v) && pcr is >= 0 and < EventLogReplay.PcrCount ? v[pcr] : null;
}

using System.Collections.Concurrent;
using System.Text.Json;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Tests.Decoding;

/// <summary>
/// The fixture event logs the decoding tests read: every binary log that parses, and the logs
/// embedded (base64 Log.Raw) in the two go-attestation/go-eventlog JSON fixtures. Parsed once.
/// </summary>
public static class DecodingFixtures
{
    /// <summary>Binary fixtures that are not parsable logs (FixtureReplayTests asserts why): keylime's
    /// two negative cases and tpm2-tools' Spec ID event whose eventSize leaves out its vendor bytes.</summary>
    public static readonly IReadOnlySet<string> Unparsable = new HashSet<string>
    {
        "keylime__create-mb-policy__binary_bios_measurements-bogus",
        "keylime__create-mb-policy__binary_bios_measurements-empty",
        "tpm2-tools__specid-vendordata.bin",
    };

    public static readonly IReadOnlyList<string> JsonLogs =
        ["go-attestation__windows_gcp_shielded_vm.json", "go-eventlog__linux_tpm12.json"];

    private static readonly ConcurrentDictionary<string, ParsedEventLog> Cache = new();

    public static IEnumerable<string> Names() =>
        Fixtures.BinaryLogs().Where(n => !Unparsable.Contains(n)).Concat(JsonLogs);

    public static TheoryData<string> Theory() => [.. Names()];

    public static ParsedEventLog Log(string name) => Cache.GetOrAdd(name, static n => EventLogParser.Parse(Bytes(n)));

    public static UntrustedEvent Event(string name, int number) => Log(name).Events[number];

    private static byte[] Bytes(string name)
    {
        if (!name.EndsWith(".json", StringComparison.Ordinal))
        {
            return Fixtures.Bytes(name);
        }
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir, name)));
        return Convert.FromBase64String(doc.RootElement.GetProperty("Log").GetProperty("Raw").GetString()!);
    }
}

using Rempart.Attestation.Decoding;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Tests.Decoding;

/// <summary>
/// Every event of every fixture log decodes without throwing, renders as JSON and one line of
/// text, and is well-formed for its type except the cases named here with their reason.
/// </summary>
public sealed class FixtureDecodingTests
{
    /// <summary>
    /// The only events in the fixtures whose data does not have its type's layout. Both are HP
    /// firmware (S-CRTM "M60", SOURCES.md): EV_S_CRTM_VERSION holds the ASCII string "M60"
    /// NUL-padded to 16 bytes followed by 264 bytes of vendor data, where PFP v1.05 §10.4.1 asks
    /// for a UTF-16 string or a GUID. The decoder reports it rather than guessing.
    /// </summary>
    private static readonly Dictionary<(string Log, int Event), string> KnownMalformed = new()
    {
        [("go-attestation__ebs_event_missing_eventlog", 0)] = "NUL-terminated UTF-16 version string or a 16-byte GUID (got 280 bytes",
        [("go-attestation__option_rom_eventlog", 0)] = "NUL-terminated UTF-16 version string or a 16-byte GUID (got 280 bytes",
    };

    public static TheoryData<string> Logs() => DecodingFixtures.Theory();

    [Fact]
    public void The_skipped_binary_fixtures_are_exactly_those_that_do_not_parse()
    {
        var unparsable = Fixtures.BinaryLogs().Where(n => !EventLogParser.TryParse(Fixtures.Bytes(n), out _, out _)).ToHashSet();
        Assert.Equal(DecodingFixtures.Unparsable.Order(), unparsable.Order());
    }

    [Theory]
    [MemberData(nameof(Logs))]
    public void Every_event_decodes_and_only_the_named_cases_are_malformed(string name)
    {
        var log = DecodingFixtures.Log(name);
        var found = new List<int>();
        foreach (var e in log.Events)
        {
            var decoded = EventDataDecoder.Decode(e);
            var json = decoded.ToJson();
            Assert.Equal(decoded.Kind, (string?)json["kind"]);
            Assert.NotEmpty(json.ToJsonString());
            string line = decoded.ToString();
            Assert.False(string.IsNullOrWhiteSpace(line));
            Assert.DoesNotContain('\n', line);
            if (decoded is DecodeError error)
            {
                Assert.True(KnownMalformed.TryGetValue((name, e.Number), out var expected),
                    $"{name} event {e.Number} ({TcgEventTypeNames.Name(e.UntrustedType)}): {error.Message}");
                Assert.Contains(expected, error.Message);
                Assert.StartsWith(TcgEventTypeNames.Name(e.UntrustedType), error.Message);
                found.Add(e.Number);
            }
        }
        Assert.Equal(KnownMalformed.Keys.Where(k => k.Log == name).Select(k => k.Event).Order(), found.Order());
    }

    [Theory]
    [MemberData(nameof(Logs))]
    public void Every_certificate_in_a_signature_database_or_authority_event_parses(string name)
    {
        foreach (var e in DecodingFixtures.Log(name).Events)
        {
            if (EventDataDecoder.Decode(e) is not UefiVariableData { Value: { } value } v)
            {
                continue;
            }
            IEnumerable<SignatureEntry> entries = value switch
            {
                SignatureDatabaseValue db => db.Lists.Where(l => l.SignatureType == UefiGuids.CertX509).SelectMany(l => l.Signatures),
                AuthorityValue a when v.UnicodeName is "db" or "Shim" or "MokList" or "vendor_db" => [a.Entry],
                _ => [],
            };
            foreach (var entry in entries)
            {
                Assert.True(entry.Certificate is not null, $"{name} event {e.Number} {v.UnicodeName}: {entry.CertificateError}");
                Assert.Equal(64, entry.Certificate.Sha256Fingerprint.Length);
                Assert.True(entry.Certificate.Der.Length <= entry.Data.Length);
            }
        }
    }

    [Fact]
    public void Real_logs_exercise_every_decoded_form()
    {
        var kinds = DecodingFixtures.Names()
            .SelectMany(n => DecodingFixtures.Log(n).Events)
            .Select(e => EventDataDecoder.Decode(e).Kind)
            .ToHashSet();
        string[] expected =
        [
            "uefi-variable", "image-load", "gpt", "ipl", "tagged-event", "s-crtm-version", "firmware-blob", "handoff-tables",
            "separator", "text", "nonhost-info", "spec-id", "startup-locality", "sp800-155", "raw", "error",
        ];
        Assert.Empty(expected.Except(kinds));
    }
}

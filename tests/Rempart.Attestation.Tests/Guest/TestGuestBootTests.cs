using System.Text;
using Rempart.Attestation.EventLog;
using Rempart.Tpm;

namespace Rempart.Attestation.Tests.Guest;

/// <summary>
/// The real test guest under enforced Secure Boot with a swtpm vTPM: the event log it reads from
/// its kernel replays exactly to the PCRs its vTPM holds; the unsigned image never reaches init.
/// Each boot is about 20 s of software emulation, so each case boots once and checks everything.
/// </summary>
public sealed class TestGuestBootTests
{
    [Theory]
    [InlineData("sha256")]
    [InlineData("sha1,sha256")]
    public void The_signed_guest_boots_and_its_event_log_replays_to_its_vTPM_PCRs(string banks)
    {
        var report = TestGuest.Boot("guest.img", banks);
        Assert.True(report.ExitCode == 0, report.Console);
        Assert.Equal("1", report.Value("secureboot"));
        Assert.Equal("1", report.Value("tpm"));
        Assert.Equal(TestGuest.Marker(), report.Value("marker"));

        var raw = report.EventLog;
        Assert.Equal(report.Value("eventlog-size"), raw.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var log = EventLogParser.Parse(raw);
        Assert.Equal(EventLogFormat.CryptoAgile, log.Format);
        Assert.Equal(banks.Split(',').Select(b => { TpmHash.TryParse(b, out var a); return a; }).Order(), log.Banks.Order());

        var replay = EventLogReplay.Replay(log);
        var pcrs = report.Pcrs();
        int compared = 0;
        foreach (var bank in banks.Split(','))
        {
            Assert.True(TpmHash.TryParse(bank, out var alg));
            Assert.Equal(24, pcrs[bank].Count);
            foreach (var (pcr, value) in replay.Banks[alg])
            {
                Assert.True(Convert.ToHexStringLower(value) == Convert.ToHexStringLower(pcrs[bank][pcr]),
                    $"{bank}:{pcr} replayed {Convert.ToHexStringLower(value)}, vTPM has {Convert.ToHexStringLower(pcrs[bank][pcr])}");
                compared++;
            }
            // PCRs the firmware log does not extend hold their reset values (PCR 10 is IMA's, not in this log).
            foreach (var pcr in Enumerable.Range(0, 24).Where(p => p != 10 && !replay.Banks[alg].ContainsKey(p)))
            {
                Assert.Equal(EventLogReplay.Initial(alg, pcr), pcrs[bank][pcr]);
            }
        }
        Assert.True(compared >= 8, $"only {compared} PCRs compared");

        // The decoded log says Secure Boot was on: the EV_EFI_VARIABLE_DRIVER_CONFIG for
        // SecureBoot (EFI global variable) has the value 1, and its digest covers its data.
        var secureBoot = log.Events.Single(e => e.UntrustedType == TcgEventType.EfiVariableDriverConfig && VariableName(e) == "SecureBoot");
        Assert.Equal(1, secureBoot.Data.Span[^1]);
        Assert.Equal(DataDigestStatus.Match, EventDataDigests.Check(secureBoot));
        Assert.Equal(7u, secureBoot.Pcr);
    }

    [Fact]
    public void The_unsigned_guest_is_refused_by_the_firmware_and_never_reaches_init()
    {
        var report = TestGuest.Boot("guest-unsigned.img", "sha256");
        Assert.True(report.ExitCode == 2, report.Console);
        Assert.Empty(report.Lines);
        Assert.Contains("Access Denied", report.Console);
    }

    private static string VariableName(UntrustedEvent e)
    {
        var s = e.Data.Span;
        int nameLen = (int)BitConverter.ToUInt64(s[16..24]);
        return Encoding.Unicode.GetString(s.Slice(32, nameLen * 2));
    }
}

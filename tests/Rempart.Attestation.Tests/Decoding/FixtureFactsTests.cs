using System.Text.RegularExpressions;
using Rempart.Attestation.Decoding;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Tests.Decoding;

/// <summary>
/// Decoded values checked against facts stated independently of our decoder: SOURCES.md (written
/// when the fixtures were collected) and what the logs' origins are known to contain.
/// </summary>
public sealed partial class FixtureFactsTests
{
    [GeneratedRegex(@"^\| `(?<name>[^`]+)` \|(?<row>.*)$", RegexOptions.Multiline)]
    private static partial Regex SourcesRow();

    /// <summary>The rows of SOURCES.md's file table: file name and the rest of the row.</summary>
    private static IEnumerable<(string Name, string Row)> Sources() =>
        SourcesRow().Matches(File.ReadAllText(Path.Combine(Fixtures.Dir, "SOURCES.md")))
            .Select(m => (m.Groups["name"].Value, m.Groups["row"].Value))
            .Where(r => DecodingFixtures.Names().Contains(r.Item1));

    private static IEnumerable<T> Decoded<T>(string log) where T : DecodedEventData =>
        DecodingFixtures.Log(log).Events.Select(EventDataDecoder.Decode).OfType<T>();

    private static UefiVariableData Variable(string log, string name, TcgEventType type = TcgEventType.EfiVariableDriverConfig) =>
        DecodingFixtures.Log(log).Events.Where(e => e.UntrustedType == type)
            .Select(EventDataDecoder.Decode).OfType<UefiVariableData>().First(v => v.UnicodeName == name);

    [Fact]
    public void SecureBoot_is_the_value_SOURCES_md_states()
    {
        var stated = Sources()
            .Select(r => (r.Name, Match: Regex.Match(r.Row, @"SecureBoot=(\d)")))
            .Where(r => r.Match.Success)
            .ToList();
        Assert.True(stated.Count >= 20, $"only {stated.Count} rows state SecureBoot=N");
        foreach (var (name, match) in stated)
        {
            var secureBoot = Assert.IsType<BooleanValue>(Variable(name, "SecureBoot").Value);
            Assert.True(byte.Parse(match.Groups[1].Value) == secureBoot.Raw, $"{name}: SOURCES.md says {match.Value}, decoded {secureBoot.Raw}");
        }
        // Rows that say it in words: a 0-byte SecureBoot variable (absent: disabled), and a 0.
        Assert.Null(Assert.IsType<BooleanValue>(Variable("go-tpm-tools__arch-linux-workstation.bin", "SecureBoot").Value).Raw);
        Assert.Null(Assert.IsType<BooleanValue>(Variable("tpm2-tools__event-sd-boot-fedora37.bin", "SecureBoot").Value).Raw);
        Assert.Equal((byte)0, Assert.IsType<BooleanValue>(Variable("go-tpm-tools__ubuntu-1804-amd-sev.bin", "SecureBoot").Value).Raw);
    }

    [Fact]
    public void The_keylime_Secure_Boot_VM_has_Microsoft_certificates_in_db()
    {
        // SOURCES.md: a RHEL 9 OVMF ("edk2-20240524-7.el9") VM booting shim with SecureBoot=1. RHEL's
        // Secure Boot OVMF variables enrol Microsoft's CAs in db (shim is signed by Microsoft's UEFI
        // CA 2011), and the log's own EV_EFI_VARIABLE_AUTHORITY event names that CA as the db entry
        // that verified shim, with Microsoft's owner GUID.
        const string log = "keylime__create-mb-policy__binary_bios_measurements-secureboot";
        var db = Assert.IsType<SignatureDatabaseValue>(Variable(log, "db").Value);
        Assert.Contains(db.Certificates, c => c.Subject.Contains("Microsoft", StringComparison.Ordinal));
        Assert.All(db.Entries, e => Assert.Equal(UefiGuids.MicrosoftSignatureOwner, e.Owner));
        var authority = Assert.IsType<AuthorityValue>(Variable(log, "db", TcgEventType.EfiVariableAuthority).Value);
        Assert.Equal(UefiGuids.MicrosoftSignatureOwner, authority.Entry.Owner);
        Assert.Contains("Microsoft Corporation UEFI CA 2011", authority.Entry.Certificate!.Subject);
        Assert.Contains(db.Certificates, c => c.Sha256Fingerprint == authority.Entry.Certificate.Sha256Fingerprint);
        var dbx = Assert.IsType<SignatureDatabaseValue>(Variable(log, "dbx").Value);
        Assert.All(dbx.Lists, l => Assert.Equal(UefiGuids.CertSha256, l.SignatureType));
        Assert.All(dbx.Entries, e => Assert.Equal(32, e.Data.Length));
    }

    [Fact]
    public void S_CRTM_versions_are_what_SOURCES_md_states()
    {
        int checkedRows = 0;
        foreach (var (name, row) in Sources())
        {
            var events = DecodingFixtures.Log(name).Events.Where(e => e.UntrustedType == TcgEventType.SCrtmVersion).ToList();
            var decoded = events.Select(EventDataDecoder.Decode).ToList();
            var stated = Regex.Match(row, @"S-CRTM(?:/BIOS)? version ""?(?<v>[A-Za-z0-9.]+)""?|S-CRTM ""(?<v>[A-Za-z0-9.]+)""");
            if (row.Contains("S-CRTM version is a GUID", StringComparison.Ordinal))
            {
                Assert.NotNull(Assert.IsType<SCrtmVersionEvent>(Assert.Single(decoded)).VersionGuid);
            }
            else if (stated.Success && stated.Groups["v"].Value is var v && v != "is")
            {
                // HP's "M60" is ASCII in a 280-byte vendor structure (FixtureDecodingTests names it malformed).
                var version = decoded[0] is SCrtmVersionEvent sv ? sv.Version! : System.Text.Encoding.ASCII.GetString(events[0].Data.Span[..v.Length]);
                Assert.StartsWith(v, version);
            }
            else if (Regex.Match(row, "\"(GCE Virtual Firmware v\\d)\"") is { Success: true } gce)
            {
                // Not every GCE row says this: the Windows GCE log's S-CRTM version is an empty string.
                Assert.Equal(gce.Groups[1].Value, Assert.IsType<SCrtmVersionEvent>(Assert.Single(decoded)).Version);
            }
            else
            {
                continue;
            }
            checkedRows++;
        }
        Assert.True(checkedRows >= 10, $"{checkedRows} rows checked");
    }

    [Fact]
    public void S_CRTM_versions_that_are_empty_strings()
    {
        Assert.Equal("", Assert.Single(Decoded<SCrtmVersionEvent>("go-attestation__sb_cert_eventlog")).Version);
        Assert.Equal("", Assert.Single(Decoded<SCrtmVersionEvent>("tpm2-tools__event-sd-boot-fedora37.bin")).Version);
    }

    [Theory]
    [InlineData("go-tpm-tools__confidential-gke-debug-251000_eventlog.bin")]
    [InlineData("go-tpm-tools__eventlogwithsp800155.bin")]
    public void The_SP800_155_logs_carry_two_Event3_records(string log)
    {
        var events = Decoded<Sp800155Event>(log).ToList();
        Assert.Equal(2, events.Count);
        Assert.All(events, e =>
        {
            Assert.Equal(3, e.Version);
            Assert.Equal(11129u, e.PlatformManufacturerId); // Google's IANA enterprise number
            Assert.Equal("Google, Inc.", e.PlatformManufacturer);
            Assert.Equal("Google Compute Engine", e.PlatformModel);
            Assert.Equal("Google, Inc.", e.FirmwareManufacturer);
            Assert.Equal(11129u, e.FirmwareManufacturerId);
            Assert.Equal("2.7", e.FirmwareVersion);
            Assert.Equal(events[0].ReferenceManifestGuid, e.ReferenceManifestGuid);
            Assert.Equal(LocatorType.Raw, e.PlatformCertLocator!.Type);
            Assert.True(e.PlatformCertLocator.Locator.IsEmpty);
            Assert.Equal(6, e.PaddingBytes);
        });
        Assert.Equal(LocatorType.UefiVariable, events[0].RimLocator!.Type);
        Assert.EndsWith(":FirmwareRIM", events[0].RimLocator!.Text);
        Assert.Equal(LocatorType.Uri, events[1].RimLocator!.Type);
        Assert.StartsWith("https://storage.googleapis.com/gce_tcb_integrity/", events[1].RimLocator!.Text);
    }

    [Fact]
    public void Linux_EFI_stub_tags_initrd_and_command_line()
    {
        var tags = Decoded<TaggedEvent>("go-tpm-tools__gdc-host.bin").ToList();
        Assert.Equal([TaggedEvent.LinuxLoadOptions, TaggedEvent.LinuxInitrd], tags.Select(t => t.TaggedEventId));
        Assert.Equal(["LOADED_IMAGE::LoadOptions", "Linux initrd"], tags.Select(t => t.Text!));
        Assert.Equal("Linux initrd", Assert.Single(Decoded<TaggedEvent>("tpm2-tools__event-sd-boot-fedora37.bin")).TagName);
    }

    [Fact]
    public void Systemd_boot_logs_its_command_line_as_UTF_16()
    {
        // SOURCES.md: "kernel command line in PCR12 (EV_IPL, UTF-16)".
        var cmdlines = DecodingFixtures.Log("tpm2-tools__event-sd-boot-fedora37.bin").Events
            .Where(e => e.Pcr == 12 && e.UntrustedType == TcgEventType.Ipl).Select(EventDataDecoder.Decode).ToList();
        Assert.Equal(2, cmdlines.Count);
        Assert.All(cmdlines, d => Assert.Equal(
            new IplEvent(IplKind.Utf16Text, " console=ttyS0 console=tty0 efi=debug "), Assert.IsType<IplEvent>(d)));
    }

    [Fact]
    public void GRUB_strings_are_classified_by_prefix()
    {
        var ipl = Decoded<IplEvent>("tpm2-tools__event-bootorder.bin").ToList();
        var kernel = Assert.Single(ipl, e => e.IplKind == IplKind.KernelCmdline);
        Assert.StartsWith("/boot/vmlinuz-5.4.0-45-generic root=PARTUUID=", kernel.Value);
        Assert.Contains(ipl, e => e.IplKind == IplKind.GrubCommand && e.Value == "set default=0");
        Assert.Contains(ipl, e => e.IplKind == IplKind.Text && e.Text == "(hd0,gpt1)/boot/grub/grub.cfg");
    }

    [Fact]
    public void Shim_quirks_are_decoded_and_reported()
    {
        const string log = "go-attestation__sb_cert_eventlog";
        // shim's own certificate, logged without an owner GUID and with 6 stray bytes.
        var shim = Variable(log, "Shim", TcgEventType.EfiVariableAuthority);
        Assert.Equal(6, shim.TrailingBytes);
        var authority = Assert.IsType<AuthorityValue>(shim.Value);
        Assert.True(authority.OwnerMissing);
        Assert.Null(authority.Entry.Owner);
        Assert.NotNull(authority.Entry.Certificate);
        // GRUB loaded by shim: UEFI_IMAGE_LOAD_EVENT with no device path and 9 bytes after it.
        var grub = Assert.IsType<ImageLoadEvent>(EventDataDecoder.Decode(DecodingFixtures.Event(log, 11)));
        Assert.Equal("", grub.DevicePath);
        Assert.Equal(9, grub.TrailingBytes);
    }

    [Fact]
    public void Separators_hash_firmware_blobs_and_handoff_tables()
    {
        // Windows boot manager's "WBCL" separators in PCRs 12-14 are neither normal nor error.
        var windows = Decoded<SeparatorEvent>("go-attestation__option_rom_eventlog").ToList();
        Assert.Equal(3, windows.Count(s => !s.IsNormal && !s.IsError && s.Value == 0x4C434257));
        Assert.All(Decoded<SeparatorEvent>("go-tpm-tools__gdc-host.bin"), s => Assert.True(s.IsNormal));
        var tables = Assert.Single(Decoded<HandoffTablesEvent>("go-tpm-tools__gdc-host.bin"));
        Assert.Equal(UefiGuids.Smbios3Table, Assert.Single(tables.Tables).VendorGuid);
        Assert.Equal("HCRTM", Assert.Single(Decoded<TextEvent>("tpm2-tss__binary_measurements_hcrtm.bin"), t => t.Text == "HCRTM").Text);
        Assert.Equal(3, Assert.Single(Decoded<StartupLocalityEvent>("go-tpm-tools__glinux-alex.bin")).StartupLocality);
    }
}

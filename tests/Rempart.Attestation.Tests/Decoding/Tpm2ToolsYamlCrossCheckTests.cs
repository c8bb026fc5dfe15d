using System.Text;
using Rempart.Attestation.Decoding;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Tests.Decoding;

/// <summary>
/// Our decoding against tpm2_eventlog's, independently written in C and built with libefivar 39
/// (the *.tpm2_eventlog.pretty-efivar39.yaml fixtures, tpm2-tools' own test expectations).
/// tpm2-tools decodes Boot####, SecureBoot, signature lists and GPT only in its "version: 2"
/// output; "version: 1" files print those as hex, which is compared with our bytes instead.
/// </summary>
public sealed class Tpm2ToolsYamlCrossCheckTests
{
    private const string Suffix = ".tpm2_eventlog.pretty-efivar39.yaml";

    public static TheoryData<string> Logs() => [.. LogNames()];

    private static IEnumerable<string> LogNames() =>
        Directory.GetFiles(Fixtures.Dir, "*" + Suffix).Select(f => Path.GetFileName(f)[..^Suffix.Length]).Order(StringComparer.Ordinal);

    private static (Tpm2ToolsYaml Yaml, IReadOnlyList<UntrustedEvent> Events) Load(string log) =>
        (Tpm2ToolsYaml.Read(Path.Combine(Fixtures.Dir, log + Suffix)), DecodingFixtures.Log(log).Events);

    private static IEnumerable<(Tpm2ToolsYaml.Event Yaml, UntrustedEvent Event, DecodedEventData Decoded)> Pairs(string log)
    {
        var (yaml, events) = Load(log);
        return yaml.Events.Select(y => (y, events[y.Number], EventDataDecoder.Decode(events[y.Number])));
    }

    [Theory]
    [MemberData(nameof(Logs))]
    public void Events_line_up_one_to_one(string log)
    {
        var (yaml, events) = Load(log);
        Assert.Equal(events.Count, yaml.Events.Count);
        Assert.Equal(Enumerable.Range(0, events.Count), yaml.Events.Select(e => e.Number));
        Assert.All(yaml.Events, y => Assert.Equal(TcgEventTypeNames.Name(events[y.Number].UntrustedType), y.EventType));
    }

    [Theory]
    [MemberData(nameof(Logs))]
    public void Image_load_device_paths_name_the_same_nodes_as_libefivar(string log)
    {
        foreach (var (y, e, decoded) in Pairs(log).Where(p => p.Yaml.One("    DevicePath") is not null))
        {
            var image = Assert.IsType<ImageLoadEvent>(decoded);
            string theirs = y.One("    DevicePath")!;
            Assert.True(DevicePathStyle.SameNodes(theirs, image.DevicePath), $"{log} #{e.Number}: libefivar {theirs} / ours {image.DevicePath}");
            Assert.Equal(Convert.ToUInt64(y.One("    ImageLocationInMemory")!, 16), image.ImageLocationInMemory);
            Assert.Equal(ulong.Parse(y.One("    ImageLengthInMemory")!), image.ImageLengthInMemory);
            Assert.Equal(ulong.Parse(y.One("    LengthOfDevicePath")!), image.LengthOfDevicePath);
        }
    }

    [Theory]
    [MemberData(nameof(Logs))]
    public void Variable_names_vendors_and_bytes_agree(string log)
    {
        foreach (var (y, e, decoded) in Pairs(log).Where(p => p.Yaml.One("    VariableName") is not null))
        {
            var v = Assert.IsType<UefiVariableData>(decoded);
            Assert.Equal(y.One("    VariableName"), v.VariableName.ToString());
            Assert.Equal(y.One("    UnicodeName"), v.UnicodeName);
            Assert.Equal(ulong.Parse(y.One("    UnicodeNameLength")!), v.UnicodeNameLength);
            Assert.Equal(ulong.Parse(y.One("    VariableDataLength")!), v.VariableDataLength);
            if (y.One("    VariableData") is { Length: > 0 } hex)
            {
                Assert.Equal(hex, Convert.ToHexStringLower(v.VariableData.Span));
            }
            if (y.One("      Enabled") is { } enabled)
            {
                Assert.Equal(enabled == "Yes", v.Value switch
                {
                    BooleanValue b => b.Enabled,
                    LoadOptionValue o => o.Active,
                    var other => throw new Xunit.Sdk.XunitException($"{log} #{e.Number}: Enabled for {other}"),
                });
            }
        }
    }

    [Theory]
    [MemberData(nameof(Logs))]
    public void Boot_option_descriptions_and_device_paths_agree(string log)
    {
        foreach (var (y, e, decoded) in Pairs(log).Where(p => p.Yaml.One("      Description") is not null))
        {
            var option = Assert.IsType<LoadOptionValue>(Assert.IsType<UefiVariableData>(decoded).Value);
            Assert.Equal(y.One("      Description"), option.Description);
            Assert.Equal(int.Parse(y.One("      FilePathListLength")!), option.FilePathListLength);
            string theirs = y.One("      DevicePath")!;
            Assert.True(DevicePathStyle.SameNodes(theirs, option.DevicePath), $"{log} #{e.Number}: libefivar {theirs} / ours {option.DevicePath}");
        }
    }

    [Theory]
    [MemberData(nameof(Logs))]
    public void EV_IPL_strings_agree(string log)
    {
        var ipl = Pairs(log).Where(p => p.Event.UntrustedType == TcgEventType.Ipl).ToList();
        foreach (var (y, e, decoded) in ipl)
        {
            string theirs = y.One("    String")!;
            var ours = Assert.IsType<IplEvent>(decoded);
            string expected = ours.IplKind == IplKind.Utf16Text
                ? Encoding.Unicode.GetString(Encoding.Latin1.GetBytes(theirs)[..(theirs.Length & ~1)]).TrimEnd('\0')
                : theirs.TrimEnd('\0');
            Assert.Equal(expected, ours.Text);
        }
    }

    [Theory]
    [MemberData(nameof(Logs))]
    public void Signature_lists_and_authorities_agree(string log)
    {
        foreach (var (y, e, decoded) in Pairs(log))
        {
            var v = decoded as UefiVariableData;
            if (v?.Value is SignatureDatabaseValue db && y.All("    - SignatureType").Any())
            {
                Assert.Equal(y.All("    - SignatureType"), db.Lists.Select(l => l.SignatureType.ToString()));
                Assert.Equal(y.All("      SignatureListSize"), db.Lists.Select(l => l.SignatureListSize.ToString()));
                Assert.Equal(y.All("      SignatureSize"), db.Lists.Select(l => l.SignatureSize.ToString()));
                Assert.Equal(y.All("      - SignatureOwner"), db.Entries.Select(s => s.Owner.ToString()!));
                Assert.Equal(y.All("        SignatureData"), db.Entries.Select(s => Convert.ToHexStringLower(s.Data.Span)));
            }
            else if (v?.Value is AuthorityValue authority && y.One("    - SignatureOwner") is { } owner)
            {
                string data = y.One("      SignatureData")!;
                if (authority.OwnerMissing)
                {
                    // tpm2-tools reads shim's bare certificate as EFI_SIGNATURE_DATA: its "owner" is
                    // the certificate's first 16 bytes, and its data the rest.
                    var der = authority.Entry.Certificate!.Der.Span;
                    Assert.Equal(owner, new Guid(der[..16]).ToString());
                    Assert.Equal(data, Convert.ToHexStringLower(der[16..]));
                }
                else
                {
                    Assert.Equal(owner, authority.Entry.Owner.ToString());
                    Assert.Equal(data, Convert.ToHexStringLower(authority.Entry.Data.Span));
                }
            }
            else if (v?.Value is TextValue sbat && y.One("      String") is { } text)
            {
                Assert.Equal(text, sbat.Text);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Logs))]
    public void GPT_partitions_agree(string log)
    {
        foreach (var (y, e, decoded) in Pairs(log).Where(p => p.Yaml.One("      DiskGUID") is not null))
        {
            var gpt = Assert.IsType<GptEvent>(decoded);
            Assert.Equal(y.One("      DiskGUID"), gpt.DiskGuid.ToString());
            Assert.Equal(y.One("    NumberOfPartitions"), gpt.Partitions.Count.ToString());
            Assert.Equal(y.All("    - PartitionTypeGUID"), gpt.Partitions.Select(p => p.PartitionTypeGuid.ToString()));
            Assert.Equal(y.All("      UniquePartitionGUID"), gpt.Partitions.Select(p => p.UniquePartitionGuid.ToString()));
            Assert.Equal(y.All("      StartingLBA"), gpt.Partitions.Select(p => $"0x{p.StartingLba:x}"));
            Assert.Equal(y.All("      EndingLBA"), gpt.Partitions.Select(p => $"0x{p.EndingLba:x}"));
            Assert.Equal(y.All("      PartitionName"), gpt.Partitions.Select(p => p.PartitionName));
        }
    }

    [Fact]
    public void The_reader_sees_every_field_the_YAML_files_hold()
    {
        // Counts of these lines in the *.pretty-efivar39.yaml files (grep -c "^<key>:"): a reader
        // that missed fields would make the checks above pass vacuously.
        var expected = new Dictionary<string, int>
        {
            ["    DevicePath"] = 24,
            ["      DevicePath"] = 14,
            ["      Description"] = 14,
            ["    VariableName"] = 83,
            ["    String"] = 241,
            ["    - SignatureType"] = 26,
            ["      - SignatureOwner"] = 102,
            ["    - SignatureOwner"] = 2,
            ["      DiskGUID"] = 3,
            ["      Enabled"] = 19,
        };
        var yaml = LogNames().Select(l => Tpm2ToolsYaml.Read(Path.Combine(Fixtures.Dir, l + Suffix))).ToList();
        foreach (var (key, count) in expected)
        {
            Assert.True(count == yaml.Sum(y => y.Events.Sum(e => e.All(key).Count())), key);
        }
    }

    [Fact]
    public void The_only_style_differences_from_libefivar_are_the_documented_ones()
    {
        var differing = new HashSet<string>();
        int paths = 0, identical = 0;
        foreach (var log in LogNames())
        {
            foreach (var (y, _, decoded) in Pairs(log))
            {
                string? theirs = y.One("    DevicePath") ?? y.One("      DevicePath");
                string? ours = decoded switch
                {
                    ImageLoadEvent i => i.DevicePath,
                    UefiVariableData { Value: LoadOptionValue o } => o.DevicePath,
                    _ => null,
                };
                if (theirs is null || ours is null)
                {
                    continue;
                }
                paths++;
                identical += theirs == ours ? 1 : 0;
                foreach (var (t, o) in DevicePathStyle.Nodes(theirs).Zip(DevicePathStyle.Nodes(ours)).Where(p => p.First != p.Second))
                {
                    differing.Add(DevicePathStyle.Name(t));
                }
            }
        }
        Assert.True(paths >= 35, $"{paths} device paths compared");
        Assert.True(identical >= paths / 2, $"{identical} of {paths} identical");
        Assert.Equal(DevicePathStyle.NodesPrintedDifferently.Order(), differing.Order());
    }
}

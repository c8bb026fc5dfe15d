using System.Text.Json.Nodes;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>One EFI_PARTITION_ENTRY (UEFI 2.10 §5.3.3), the first 128 bytes of each entry.</summary>
public sealed record GptPartition(Guid PartitionTypeGuid, Guid UniquePartitionGuid, ulong StartingLba, ulong EndingLba, ulong Attributes, string PartitionName)
{
    public JsonObject ToJson() => new()
    {
        ["partitionTypeGuid"] = DecodingText.GuidJson(PartitionTypeGuid),
        ["uniquePartitionGuid"] = DecodingText.Guid(UniquePartitionGuid),
        ["startingLba"] = StartingLba,
        ["endingLba"] = EndingLba,
        ["attributes"] = Attributes,
        ["partitionName"] = PartitionName,
    };
}

/// <summary>
/// UEFI_GPT_DATA (PFP v1.05 §10.2; EV_EFI_GPT_EVENT, §10.4.1): the 92-byte
/// EFI_PARTITION_TABLE_HEADER (UEFI 2.10 §5.3.2) of the boot disk, NumberOfPartitions (UINT64), then
/// that many partition entries of the header's SizeOfPartitionEntry bytes each (EDK2's Tcg2Dxe
/// copies whole entries; the first 128 bytes are the EFI_PARTITION_ENTRY fields).
/// </summary>
public sealed record GptEvent(
    uint Revision,
    uint HeaderSize,
    ulong MyLba,
    ulong AlternateLba,
    ulong FirstUsableLba,
    ulong LastUsableLba,
    Guid DiskGuid,
    ulong PartitionEntryLba,
    uint NumberOfPartitionEntries,
    uint SizeOfPartitionEntry,
    IReadOnlyList<GptPartition> Partitions) : DecodedEventData
{
    private const int HeaderBytes = 92;
    private const int EntryBytes = 128;
    private static readonly byte[] Signature = "EFI PART"u8.ToArray();

    public override string Kind => "gpt";

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["revision"] = $"0x{Revision:x8}";
        o["headerSize"] = HeaderSize;
        o["myLba"] = MyLba;
        o["alternateLba"] = AlternateLba;
        o["firstUsableLba"] = FirstUsableLba;
        o["lastUsableLba"] = LastUsableLba;
        o["diskGuid"] = DecodingText.Guid(DiskGuid);
        o["partitionEntryLba"] = PartitionEntryLba;
        o["numberOfPartitionEntries"] = NumberOfPartitionEntries;
        o["sizeOfPartitionEntry"] = SizeOfPartitionEntry;
        o["partitions"] = new JsonArray([.. Partitions.Select(p => (JsonNode)p.ToJson())]);
        return o;
    }

    protected override string Summary() =>
        $"disk {DecodingText.Guid(DiskGuid)}, {Partitions.Count} partitions: " +
        string.Join(", ", Partitions.Select(p => $"{(p.PartitionName.Length > 0 ? DecodingText.Quote(p.PartitionName) : "(unnamed)")} {UefiGuids.Name(p.PartitionTypeGuid) ?? DecodingText.Guid(p.PartitionTypeGuid)}"));

    internal static GptEvent Read(ref LeReader r)
    {
        if (r.Remaining < HeaderBytes + 8)
        {
            throw r.Error($"a {HeaderBytes}-byte EFI_PARTITION_TABLE_HEADER and NumberOfPartitions ({r.Remaining} bytes remain)");
        }
        long signatureAt = r.Offset;
        if (!r.Take(8, "Signature").Span.SequenceEqual(Signature))
        {
            throw new EventLogFormatException(signatureAt, "the GPT header Signature \"EFI PART\"");
        }
        uint revision = r.U32("Revision");
        uint headerSize = r.U32("HeaderSize");
        r.U32("HeaderCRC32");
        r.U32("Reserved");
        ulong myLba = r.U64("MyLBA");
        ulong alternate = r.U64("AlternateLBA");
        ulong firstUsable = r.U64("FirstUsableLBA");
        ulong lastUsable = r.U64("LastUsableLBA");
        var disk = r.Guid("DiskGUID");
        ulong entryLba = r.U64("PartitionEntryLBA");
        uint entries = r.U32("NumberOfPartitionEntries");
        long entrySizeAt = r.Offset;
        uint entrySize = r.U32("SizeOfPartitionEntry");
        r.U32("PartitionEntryArrayCRC32");
        long countAt = r.Offset;
        ulong count = r.U64("NumberOfPartitions");
        if (entrySize < EntryBytes)
        {
            throw new EventLogFormatException(entrySizeAt, $"a SizeOfPartitionEntry of at least {EntryBytes} (got {entrySize})");
        }
        if (count > (ulong)r.Remaining / entrySize)
        {
            throw new EventLogFormatException(countAt,
                $"NumberOfPartitions × SizeOfPartitionEntry ({count} × {entrySize}) within the {r.Remaining} bytes that remain");
        }
        var partitions = new List<GptPartition>((int)count);
        for (ulong i = 0; i < count; i++)
        {
            long entryAt = r.Offset;
            var er = r.Sub(r.Take(entrySize, $"partition entry {i}"), entryAt);
            var type = er.Guid("PartitionTypeGUID");
            var unique = er.Guid("UniquePartitionGUID");
            ulong start = er.U64("StartingLBA");
            ulong end = er.U64("EndingLBA");
            ulong attributes = er.U64("Attributes");
            string name = DecodingText.Utf16UntilNul(er.Take(72, "PartitionName").Span);
            partitions.Add(new GptPartition(type, unique, start, end, attributes, name));
        }
        if (!r.AtEnd)
        {
            throw r.Error($"no bytes after the {count} partition entries ({r.Remaining} remain)");
        }
        return new GptEvent(revision, headerSize, myLba, alternate, firstUsable, lastUsable, disk, entryLba, entries, entrySize, partitions);
    }
}

using Rempart.Attestation.Decoding;

namespace Rempart.Attestation.Tests.Decoding;

/// <summary>
/// Device path nodes the fixtures do not contain, built from their UEFI 2.10 §10.3 layouts,
/// against the text EDK2's DevicePathToText (DisplayOnly and AllowShortcuts FALSE) gives them.
/// </summary>
public sealed class DevicePathTextTests
{
    private const string Guid = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    private const string GuidBytes = "2873" + "2ac1" + "1ff8" + "d211" + "ba4b00a0c93ec93b";

    private static readonly Dictionary<string, (byte[] Path, string Text)> Cases = new()
    {
        ["empty"] = ([], ""),
        ["PCI"] = (P().Node(1, 1, "0114"), "Pci(0x14,0x1)"),
        ["PciRoot"] = (P().Node(2, 1, "d041030a00000000"), "PciRoot(0x0)"),
        ["PcieRoot"] = (P().Node(2, 1, "d041080a01000000"), "PcieRoot(0x1)"),
        ["ACPI PNP without a short name"] = (P().Node(2, 1, "d041020c02000000"), "Acpi(PNP0c02,0x2)"),
        ["ACPI non-PNP HID"] = (P().Node(2, 1, "7856341200000000"), "Acpi(0x12345678,0x0)"),
        ["ACPI expanded, strings only in UID"] = (P().Node(2, 2, "d041030a" + "00000000" + "00000000" + "00" + "61626300" + "00"), "AcpiExp(PNP0A03,@@@0000,abc)"),
        ["ACPI _ADR list"] = (P().Node(2, 3, "0001000000020000"), "AcpiAdr(0x100,0x200)"),
        ["memory mapped"] = (P().Node(1, 3, "0b000000" + "0010000000000000" + "ff1f000000000000"), "MemoryMapped(0xb,0x1000,0x1fff)"),
        ["vendor hardware with data"] = (P().Node(1, 4, GuidBytes + "0102"), $"VenHw({Guid},0102)"),
        ["vendor messaging, no shortcut"] = (P().Node(3, 10, "5347c1e0bef9d2119a0c0090273fc14d"), "VenMsg(e0c14753-f9be-11d2-9a0c-0090273fc14d)"),
        ["vendor media"] = (P().Node(4, 3, GuidBytes), $"VenMedia({Guid})"),
        ["ATAPI"] = (P().Node(3, 1, "01000200"), "Ata(Secondary,Master,0x2)"),
        ["SCSI"] = (P().Node(3, 2, "01000000"), "Scsi(0x1,0x0)"),
        ["USB"] = (P().Node(3, 5, "0300"), "USB(0x3,0x0)"),
        ["SATA"] = (P().Node(3, 18, "0000ffff0000"), "Sata(0x0,0xffff,0x0)"),
        ["MAC, Ethernet"] = (P().Node(3, 11, "525400123456" + new string('0', 52) + "01"), "MAC(525400123456,0x1)"),
        ["IPv4, 27-byte form"] = (P().Node(3, 12, "0a000002" + "0a000001" + "0000" + "4500" + "0600" + "01" + "0a0000fe" + "ffffff00"),
            "IPv4(10.0.0.1,TCP,Static,10.0.0.2,10.0.0.254,255.255.255.0)"),
        ["IPv4, older 19-byte form"] = (P().Node(3, 12, "0a000002" + "0a000001" + "0000" + "4500" + "1100" + "00"), "IPv4(10.0.0.1,UDP,DHCP,10.0.0.2)"),
        ["URI"] = (P().Node(3, 24, Convert.ToHexString("http://example.com/boot.efi"u8)), "Uri(http://example.com/boot.efi)"),
        ["NVMe"] = (P().Node(3, 23, "01000000" + "0102030405060708"), "NVMe(0x1,08-07-06-05-04-03-02-01)"),
        ["logical unit"] = (P().Node(3, 17, "05"), "Unit(0x5)"),
        ["VLAN"] = (P().Node(3, 20, "6400"), "Vlan(100)"),
        ["hard drive, GPT"] = (P().Node(4, 1, "01000000" + "0008000000000000" + "0000100000000000" + GuidBytes + "02" + "02"), $"HD(1,GPT,{Guid},0x800,0x100000)"),
        ["hard drive, MBR"] = (P().Node(4, 1, "02000000" + "0008000000000000" + "0010000000000000" + "78563412" + new string('0', 24) + "01" + "01"), "HD(2,MBR,0x12345678,0x800,0x1000)"),
        ["CD-ROM"] = (P().Node(4, 2, "00000000" + "1000000000000000" + "2000000000000000"), "CDROM(0x0,0x10,0x20)"),
        ["file path"] = (P().Node(4, 4, Convert.ToHexString(System.Text.Encoding.Unicode.GetBytes("\\EFI\\BOOT\\BOOTX64.EFI\0"))), "\\EFI\\BOOT\\BOOTX64.EFI"),
        ["firmware volume and file"] = (P().Node(4, 7, GuidBytes).Node(4, 6, GuidBytes), $"Fv({Guid})/FvFile({Guid})"),
        ["relative offset"] = (P().Node(4, 8, "00000000" + "00f2000000000000" + "ff01020000000000"), "Offset(0xf200,0x201ff)"),
        ["BBS"] = (P().Node(5, 1, "0200" + "0000" + Convert.ToHexString("Disk\0"u8)), "BBS(HD,Disk,0x0)"),
        ["unknown type"] = (P().Node(0x10, 1, "abcd"), "Path(16,1,abcd)"),
        ["unknown hardware subtype"] = (P().Node(1, 9, "ab"), "HardwarePath(9,ab)"),
        ["unknown messaging subtype"] = (P().Node(3, 200, "ab"), "Msg(200,ab)"),
        ["unknown media subtype"] = (P().Node(4, 20, ""), "MediaPath(20)"),
        ["two instances"] = (P().Node(1, 1, "0001").Node(0x7F, 0x01, "").Node(1, 1, "0002"), "Pci(0x1,0x0),Pci(0x2,0x0)"),
        ["a whole boot path"] = (P().Node(2, 1, "d041030a00000000").Node(1, 1, "0017").Node(3, 18, "0100ffff0000")
            .Node(4, 4, Convert.ToHexString(System.Text.Encoding.Unicode.GetBytes("\\vmlinuz\0"))),
            "PciRoot(0x0)/Pci(0x17,0x0)/Sata(0x1,0xffff,0x0)/\\vmlinuz"),
    };

    public static TheoryData<string> Names() => [.. Cases.Keys];

    private static EventDataBuilder P() => new();

    [Theory]
    [MemberData(nameof(Names))]
    public void Node_text(string name)
    {
        var (path, text) = Cases[name];
        byte[] bytes = path.Length == 0 ? path : [.. path, .. new EventDataBuilder().End().Build()];
        Assert.True(DevicePathText.TryFormat(bytes, out var actual, out var error), error);
        Assert.Equal(text, actual);
    }
}

using System.Buffers.Binary;
using System.Text;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>Messaging (UEFI 2.10 §10.3.4) and media (§10.3.6) device path nodes.</summary>
public static partial class DevicePathText
{
    private static readonly Dictionary<Guid, string> RamDiskTypes = new()
    {
        [new("77ab535a-45fc-624b-5560-f7b281d1f96e")] = "VirtualDisk",
        [new("3d5abd30-4175-87ce-6d64-d2ade523c4bb")] = "VirtualCD",
        [new("5cea02c9-4d07-69d3-269f-4496fbe096f9")] = "PersistentVirtualDisk",
        [new("08018188-42cd-bb48-100f-5387d53ded3d")] = "PersistentVirtualCD",
    };

    private static string Messaging(byte sub, ref LeReader n, ReadOnlySpan<byte> body)
    {
        switch (sub)
        {
            case 1:
                byte primary = n.U8("ATAPI PrimarySecondary");
                byte slave = n.U8("ATAPI SlaveMaster");
                return $"Ata({(primary == 1 ? "Secondary" : "Primary")},{(slave == 1 ? "Slave" : "Master")},{X(n.U16("ATAPI Lun"))})";
            case 2:
                ushort pun = n.U16("SCSI Pun");
                return $"Scsi({X(pun)},{X(n.U16("SCSI Lun"))})";
            case 3:
                n.U32("Fibre Channel Reserved");
                ulong wwn = n.U64("Fibre Channel WWN");
                return $"Fibre({X(wwn)},{X(n.U64("Fibre Channel Lun"))})";
            case 4:
                n.U32("1394 Reserved");
                return $"I1394({n.U64("1394 GUID"):x16})";
            case 5:
                byte port = n.U8("USB ParentPortNumber");
                return $"USB({X(port)},{X(n.U8("USB InterfaceNumber"))})";
            case 6:
                return $"I2O({X(n.U32("I2O Tid"))})";
            case 9:
                return InfiniBand(ref n);
            case 10:
                return Vendor("VenMsg", ref n);
            case 11:
                var mac = n.Take(32, "MAC address").Span;
                byte ifType = n.U8("MAC IfType");
                return $"MAC({Hex(mac[..(ifType is 0 or 1 ? 6 : 32)])},{X(ifType)})";
            case 12:
                return IPv4(ref n, body.Length + 4);
            case 13:
                return IPv6(ref n, body.Length + 4);
            case 14:
                return Uart(ref n);
            case 15:
                return UsbClass(ref n);
            case 16:
                ushort iface = n.U16("USB WWID InterfaceNumber");
                ushort vendor = n.U16("USB WWID VendorId");
                ushort product = n.U16("USB WWID ProductId");
                string serial = DecodingText.Utf16UntilNul(n.Take(n.Remaining, "USB WWID SerialNumber").Span);
                return $"UsbWwid({X(vendor)},{X(product)},{X(iface)},\"{serial}\")";
            case 17:
                return $"Unit({X(n.U8("Logical Unit Number"))})";
            case 18:
                ushort hba = n.U16("SATA HBAPortNumber");
                ushort multiplier = n.U16("SATA PortMultiplierPortNumber");
                return $"Sata({X(hba)},{X(multiplier)},{X(n.U16("SATA Lun"))})";
            case 19:
                return Iscsi(ref n);
            case 20:
                return $"Vlan({n.U16("VLAN Id")})";
            case 21:
                n.U32("Fibre Channel Ex Reserved");
                var wwnEx = n.Take(8, "Fibre Channel Ex WWN").Span;
                return $"FibreEx(0x{Hex(wwnEx)},0x{Hex(n.Take(8, "Fibre Channel Ex Lun").Span)})";
            case 22:
                return SasEx(ref n);
            case 23:
                uint nsid = n.U32("NVMe NamespaceId");
                var eui = n.Take(8, "NVMe IEEE EUI-64").ToArray();
                Array.Reverse(eui);
                return $"NVMe({X(nsid)},{string.Join('-', eui.Select(b => b.ToString("x2")))})";
            case 24:
                return $"Uri({DecodingText.AsciiUntilNul(n.Take(n.Remaining, "URI").Span)})";
            case 25:
                byte ufsPun = n.U8("UFS Pun");
                return $"UFS({X(ufsPun)},{X(n.U8("UFS Lun"))})";
            case 26:
                return $"SD({X(n.U8("SD SlotNumber"))})";
            case 27:
                return $"Bluetooth({Hex(n.Take(6, "Bluetooth BD_ADDR").Span)})";
            case 28:
                return $"Wi-Fi({DecodingText.AsciiUntilNul(n.Take(32, "Wi-Fi SSId").Span)})";
            case 29:
                return $"eMMC({X(n.U8("eMMC SlotNumber"))})";
            case 30:
                var le = n.Take(6, "Bluetooth LE address").Span;
                return $"BluetoothLE({Hex(le)},0x{n.U8("Bluetooth LE address type"):x2})";
            case 31:
                return Dns(ref n);
            default:
                return $"Msg({sub}{HexArg(body)})";
        }
    }

    private static string InfiniBand(ref LeReader n)
    {
        uint flags = n.U32("InfiniBand ResourceFlags");
        var gid = n.Guid("InfiniBand PortGid");
        ulong service = n.U64("InfiniBand ServiceId");
        ulong target = n.U64("InfiniBand TargetPortId");
        return $"Infiniband({X(flags)},{DecodingText.Guid(gid)},{X(service)},{X(target)},{X(n.U64("InfiniBand DeviceId"))})";
    }

    /// <summary>IPv4 (UEFI 2.10 §10.3.4.12); gateway and mask only in the 27-byte form, as EDK2.</summary>
    private static string IPv4(ref LeReader n, int nodeLength)
    {
        var local = n.Take(4, "IPv4 LocalIpAddress").Span;
        var remote = n.Take(4, "IPv4 RemoteIpAddress").Span;
        n.U16("IPv4 LocalPort");
        n.U16("IPv4 RemotePort");
        ushort protocol = n.U16("IPv4 Protocol");
        bool isStatic = n.U8("IPv4 StaticIpAddress") != 0;
        var sb = new StringBuilder($"IPv4({Ip4(remote)},{Protocol(protocol)},{(isStatic ? "Static" : "DHCP")},{Ip4(local)}");
        if (nodeLength == 27)
        {
            var gateway = n.Take(4, "IPv4 GatewayIpAddress").Span;
            sb.Append(',').Append(Ip4(gateway)).Append(',').Append(Ip4(n.Take(4, "IPv4 SubnetMask").Span));
        }
        return sb.Append(')').ToString();
    }

    /// <summary>IPv6 (UEFI 2.10 §10.3.4.13); prefix and gateway only in the 60-byte form, as EDK2.</summary>
    private static string IPv6(ref LeReader n, int nodeLength)
    {
        var local = n.Take(16, "IPv6 LocalIpAddress").Span;
        var remote = n.Take(16, "IPv6 RemoteIpAddress").Span;
        n.U16("IPv6 LocalPort");
        n.U16("IPv6 RemotePort");
        ushort protocol = n.U16("IPv6 Protocol");
        string origin = n.U8("IPv6 IpAddressOrigin") switch
        {
            0 => "Static",
            1 => "StatelessAutoConfigure",
            _ => "StatefulAutoConfigure",
        };
        var sb = new StringBuilder($"IPv6({Ip6(remote)},{Protocol(protocol)},{origin},{Ip6(local)}");
        if (nodeLength == 60)
        {
            byte prefix = n.U8("IPv6 PrefixLength");
            sb.Append(',').Append(X(prefix)).Append(',').Append(Ip6(n.Take(16, "IPv6 GatewayIpAddress").Span));
        }
        return sb.Append(')').ToString();
    }

    private static string Uart(ref LeReader n)
    {
        n.U32("UART Reserved");
        ulong baud = n.U64("UART BaudRate");
        byte dataBits = n.U8("UART DataBits");
        byte parity = n.U8("UART Parity");
        byte stopBits = n.U8("UART StopBits");
        char parityText = parity < 6 ? "DNEOMS"[parity] : 'x';
        string stopText = stopBits switch { 0 => "D", 1 => "1", 2 => "1.5", 3 => "2", _ => "x" };
        return $"Uart({(baud == 0 ? "DEFAULT" : baud.ToString())},{(dataBits == 0 ? "DEFAULT" : dataBits.ToString())},{parityText},{stopText})";
    }

    private static string UsbClass(ref LeReader n)
    {
        ushort vendor = n.U16("USB class VendorId");
        ushort product = n.U16("USB class ProductId");
        byte cls = n.U8("USB DeviceClass");
        byte subclass = n.U8("USB DeviceSubClass");
        byte protocol = n.U8("USB DeviceProtocol");
        string? name = cls switch
        {
            0x01 => "UsbAudio",
            0x02 => "UsbCDCControl",
            0x03 => "UsbHID",
            0x06 => "UsbImage",
            0x07 => "UsbPrinter",
            0x08 => "UsbMassStorage",
            0x09 => "UsbHub",
            0x0A => "UsbCDCData",
            0x0B => "UsbSmartCard",
            0x0E => "UsbVideo",
            0xDC => "UsbDiagnostic",
            0xE0 => "UsbWireless",
            _ => null,
        };
        if (name is not null)
        {
            return $"{name}({X(vendor)},{X(product)},{X(subclass)},{X(protocol)})";
        }
        string? reserved = cls == 0xFE ? subclass switch
        {
            1 => "UsbDeviceFirmwareUpdate",
            2 => "UsbIrdaBridge",
            3 => "UsbTestAndMeasurement",
            _ => null,
        } : null;
        return reserved is not null
            ? $"{reserved}({X(vendor)},{X(product)},{X(protocol)})"
            : $"UsbClass({X(vendor)},{X(product)},{X(cls)},{X(subclass)},{X(protocol)})";
    }

    private static string Iscsi(ref LeReader n)
    {
        ushort protocol = n.U16("iSCSI NetworkProtocol");
        ushort options = n.U16("iSCSI LoginOption");
        var lun = n.Take(8, "iSCSI Lun").Span;
        ushort tag = n.U16("iSCSI TargetPortalGroupTag");
        string name = DecodingText.AsciiUntilNul(n.Take(n.Remaining, "iSCSI TargetName").Span);
        string header = ((options >> 1) & 1) != 0 ? "CRC32C" : "None";
        string data = ((options >> 3) & 1) != 0 ? "CRC32C" : "None";
        string auth = ((options >> 11) & 1) != 0 ? "None" : ((options >> 12) & 1) != 0 ? "CHAP_UNI" : "CHAP_BI";
        return $"iSCSI({name},{X(tag)},0x{Hex(lun)},{header},{data},{auth},{(protocol == 0 ? "TCP" : "reserved")})";
    }

    private static string SasEx(ref LeReader n)
    {
        var address = n.Take(8, "SAS Ex SasAddress").Span;
        var lun = n.Take(8, "SAS Ex Lun").Span;
        ushort topology = n.U16("SAS Ex DeviceTopology");
        ushort port = n.U16("SAS Ex RelativeTargetPort");
        var sb = new StringBuilder($"SasEx(0x{Hex(address)},0x{Hex(lun)},{X(port)},");
        if ((topology & 0x0F) == 0 && (topology & 0x80) == 0)
        {
            sb.Append("NoTopology,0,0,0");
        }
        else if ((topology & 0x0F) <= 2 && (topology & 0x80) == 0)
        {
            sb.Append((topology & 0x10) != 0 ? "SATA," : "SAS,")
              .Append((topology & 0x20) != 0 ? "External," : "Internal,")
              .Append((topology & 0x40) != 0 ? "Expanded," : "Direct,")
              .Append((topology & 0x0F) == 1 ? "0" : X((ulong)((topology >> 8) & 0xFF) + 1));
        }
        else
        {
            sb.Append(X(topology)).Append(",0,0,0");
        }
        return sb.Append(')').ToString();
    }

    private static string Dns(ref LeReader n)
    {
        bool v6 = n.U8("DNS IsIPv6") != 0;
        var servers = new List<string>(n.Remaining / 16);
        while (n.Remaining >= 16)
        {
            var ip = n.Take(16, "DNS server address").Span;
            servers.Add(v6 ? Ip6(ip) : Ip4(ip[..4]));
        }
        return $"Dns({string.Join(',', servers)})";
    }

    /// <summary>Media device paths (UEFI 2.10 §10.3.6).</summary>
    private static string Media(byte sub, ref LeReader n, ReadOnlySpan<byte> body)
    {
        switch (sub)
        {
            case 1:
                return HardDrive(ref n);
            case 2:
                uint entry = n.U32("CD-ROM BootEntry");
                ulong cdStart = n.U64("CD-ROM PartitionStart");
                return $"CDROM({X(entry)},{X(cdStart)},{X(n.U64("CD-ROM PartitionSize"))})";
            case 3:
                return Vendor("VenMedia", ref n);
            case 4:
                return DecodingText.Utf16UntilNul(n.Take(n.Remaining, "file PathName").Span);
            case 5:
                return $"Media({DecodingText.Guid(n.Guid("media Protocol GUID"))})";
            case 6:
                return $"FvFile({DecodingText.Guid(n.Guid("FvFileName GUID"))})";
            case 7:
                return $"Fv({DecodingText.Guid(n.Guid("FvName GUID"))})";
            case 8:
                n.U32("relative offset Reserved");
                ulong first = n.U64("StartingOffset");
                return $"Offset({X(first)},{X(n.U64("EndingOffset"))})";
            case 9:
                ulong start = n.U64("RAM disk StartingAddr");
                ulong end = n.U64("RAM disk EndingAddr");
                var diskType = n.Guid("RAM disk TypeGuid");
                ushort instance = n.U16("RAM disk Instance");
                return RamDiskTypes.TryGetValue(diskType, out var label)
                    ? $"{label}({X(start)},{X(end)},{instance})"
                    : $"RamDisk({X(start)},{X(end)},{instance},{DecodingText.Guid(diskType)})";
            default:
                return $"MediaPath({sub}{HexArg(body)})";
        }
    }

    /// <summary>Hard drive media path (UEFI 2.10 §10.3.6.1): HD(partition,MBR|GPT,signature,start,size).</summary>
    private static string HardDrive(ref LeReader n)
    {
        uint partition = n.U32("HD PartitionNumber");
        ulong start = n.U64("HD PartitionStart");
        ulong size = n.U64("HD PartitionSize");
        var signature = n.Take(16, "HD PartitionSignature").Span;
        n.U8("HD PartitionFormat");
        byte signatureType = n.U8("HD SignatureType");
        string sig = signatureType switch
        {
            1 => $"MBR,0x{BinaryPrimitives.ReadUInt32LittleEndian(signature):x8}",
            2 => $"GPT,{DecodingText.Guid(new Guid(signature))}",
            _ => $"{signatureType},0",
        };
        return $"HD({partition},{sig},{X(start)},{X(size)})";
    }

    private static string Protocol(ushort p) => p switch { 6 => "TCP", 17 => "UDP", _ => X(p) };

    private static string Ip4(ReadOnlySpan<byte> a) => $"{a[0]}.{a[1]}.{a[2]}.{a[3]}";

    private static string Ip6(ReadOnlySpan<byte> a)
    {
        var sb = new StringBuilder(39);
        for (int i = 0; i < 16; i += 2)
        {
            sb.Append(i == 0 ? "" : ":").Append(Hex(a.Slice(i, 2)));
        }
        return sb.ToString();
    }
}

using System.Text.Json.Nodes;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>
/// UEFI_IMAGE_LOAD_EVENT (PFP v1.05 §10.2, event data of §10.4.1), the data of EV_EFI_BOOT_SERVICES_APPLICATION,
/// EV_EFI_BOOT_SERVICES_DRIVER and EV_EFI_RUNTIME_SERVICES_DRIVER: where the image was loaded, its
/// length, its link-time address and the device path it was loaded from (as text, see
/// <see cref="DevicePathText"/>; empty when LengthOfDevicePath is 0, as for images shim loads from memory).
/// </summary>
public sealed record ImageLoadEvent(
    ulong ImageLocationInMemory,
    ulong ImageLengthInMemory,
    ulong ImageLinkTimeAddress,
    ulong LengthOfDevicePath,
    string DevicePath) : DecodedEventData
{
    private const int FixedBytes = 4 * 8;

    public override string Kind => "image-load";

    /// <summary>Bytes after the device path (see <see cref="DecodingQuirks.MaxImageLoadTrailingBytes"/>).</summary>
    public int TrailingBytes { get; init; }

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["imageLocationInMemory"] = ImageLocationInMemory;
        o["imageLengthInMemory"] = ImageLengthInMemory;
        o["imageLinkTimeAddress"] = ImageLinkTimeAddress;
        o["lengthOfDevicePath"] = LengthOfDevicePath;
        o["devicePath"] = DevicePath;
        if (TrailingBytes > 0)
        {
            o["trailingBytes"] = TrailingBytes;
        }
        return o;
    }

    protected override string Summary() =>
        $"{(DevicePath.Length == 0 ? "(no device path)" : DecodingText.Escape(DevicePath))} at 0x{ImageLocationInMemory:x} ({ImageLengthInMemory} bytes)" +
        (TrailingBytes > 0 ? $" (+{TrailingBytes} bytes after the device path)" : "");

    internal static ImageLoadEvent Read(ref LeReader r)
    {
        if (r.Remaining < FixedBytes)
        {
            throw r.Error($"a {FixedBytes}-byte UEFI_IMAGE_LOAD_EVENT header ({r.Remaining} bytes remain)");
        }
        ulong location = r.U64("ImageLocationInMemory");
        ulong length = r.U64("ImageLengthInMemory");
        ulong link = r.U64("ImageLinkTimeAddress");
        long lengthAt = r.Offset;
        ulong pathLength = r.U64("LengthOfDevicePath");
        if (pathLength > (ulong)r.Remaining)
        {
            throw new EventLogFormatException(lengthAt, $"a LengthOfDevicePath of at most {r.Remaining} (the bytes that remain) (got {pathLength})");
        }
        long pathAt = r.Offset;
        var path = r.Take((long)pathLength, "DevicePath");
        if (r.Remaining > DecodingQuirks.MaxImageLoadTrailingBytes)
        {
            throw r.Error($"at most {DecodingQuirks.MaxImageLoadTrailingBytes} bytes after the device path ({r.Remaining} remain)");
        }
        var pr = r.Sub(path, pathAt);
        string text = DevicePathText.ReadPaths(ref pr, "DevicePath", out var more);
        if (more.Count > 0)
        {
            throw new EventLogFormatException(pathAt, $"one device path in LengthOfDevicePath (found {1 + more.Count})");
        }
        return new ImageLoadEvent(location, length, link, pathLength, text) { TrailingBytes = r.Remaining };
    }
}

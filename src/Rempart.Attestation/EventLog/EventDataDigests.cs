using System.Security.Cryptography;
using System.Text;
using Rempart.Tpm;

namespace Rempart.Attestation.EventLog;

/// <summary>Whether an event's digests are the hash of its data.</summary>
public enum DataDigestStatus
{
    /// <summary>For this type the digest covers something else (a firmware volume, an image, a table in memory): the data is a description only.</summary>
    NotApplicable,
    Match,
    Mismatch,
}

/// <summary>
/// For the event types whose digest is, by PFP v1.05 §10.4.1 (Table 9) and §10.4.4, the hash of
/// (part of) their event data, checks that every digest matches. A policy must not trust
/// decoded data that its digest does not cover.
/// </summary>
public static class EventDataDigests
{
    private static readonly string[] GrubPrefixes = ["grub_cmd: ", "kernel_cmdline: ", "module_cmdline: ", "grub_kernel_cmdline "];

    /// <summary>The bytes the digest is defined over, or null when the type's digest is not over its data.</summary>
    public static ReadOnlyMemory<byte>? MeasuredBytes(UntrustedEvent e)
    {
        switch (e.UntrustedType)
        {
            // Digest of the whole event field.
            case TcgEventType.Separator:
            case TcgEventType.Action:
            case TcgEventType.EfiAction:
            case TcgEventType.EfiVariableDriverConfig:
            case TcgEventType.EfiVariableAuthority:
            case TcgEventType.EfiVariableBoot2:
            case TcgEventType.EfiGptEvent:
            case TcgEventType.EfiGptEvent2:
            case TcgEventType.SCrtmVersion:
            case TcgEventType.PlatformConfigFlags:
            case TcgEventType.OmitBootDeviceEvents:
            case TcgEventType.CompactHash:
                return e.Data;
            // EV_EFI_VARIABLE_BOOT: the digest is over UEFI_VARIABLE_DATA.VariableData only (PFP §10.4.4, Table 12 note).
            case TcgEventType.EfiVariableBoot:
                return VariableData(e.Data);
            // EV_IPL from GRUB: the logged text is "<prefix><string>\0"; the digest is over <string>.
            case TcgEventType.Ipl:
                return GrubMeasured(e.Data);
            default:
                return null;
        }
    }

    public static DataDigestStatus Check(UntrustedEvent e)
    {
        var measured = MeasuredBytes(e);
        if (measured is null)
        {
            return DataDigestStatus.NotApplicable;
        }
        bool any = false;
        Span<byte> buffer = stackalloc byte[64];
        foreach (var d in e.Digests)
        {
            if (!TpmHash.Computable(d.Algorithm))
            {
                continue;
            }
            int n = CryptographicOperations.HashData(TpmHash.Name(d.Algorithm), measured.Value.Span, buffer);
            if (!CryptographicOperations.FixedTimeEquals(buffer[..n], d.Digest.Span))
            {
                return DataDigestStatus.Mismatch;
            }
            any = true;
        }
        return any ? DataDigestStatus.Match : DataDigestStatus.NotApplicable;
    }

    /// <summary>UEFI_VARIABLE_DATA: GUID(16), UnicodeNameLength u64, VariableDataLength u64, name (UTF-16), data.</summary>
    private static ReadOnlyMemory<byte>? VariableData(ReadOnlyMemory<byte> data)
    {
        if (data.Length < 32)
        {
            return null;
        }
        var s = data.Span;
        ulong nameLen = BitConverter.ToUInt64(s[16..24]);
        ulong dataLen = BitConverter.ToUInt64(s[24..32]);
        if (nameLen > (ulong)data.Length || dataLen > (ulong)data.Length || 32 + (nameLen * 2) + dataLen != (ulong)data.Length)
        {
            return null;
        }
        return data.Slice(32 + (int)(nameLen * 2), (int)dataLen);
    }

    private static ReadOnlyMemory<byte>? GrubMeasured(ReadOnlyMemory<byte> data)
    {
        var s = data.Span;
        foreach (var p in GrubPrefixes)
        {
            var prefix = Encoding.ASCII.GetBytes(p);
            if (s.StartsWith(prefix))
            {
                int end = s.Length;
                if (end > prefix.Length && s[end - 1] == 0)
                {
                    end--;
                }
                return data[prefix.Length..end];
            }
        }
        return null;
    }
}

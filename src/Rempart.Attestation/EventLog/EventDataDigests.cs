using System.Security.Cryptography;
using System.Text;
using Rempart.Tpm;

namespace Rempart.Attestation.EventLog;

/// <summary>Whether an event's digests are the hash of its data.</summary>
public enum DataDigestStatus
{
    /// <summary>For this type the digest covers something else (a firmware volume, an image, a file, a table in memory): the data only describes it.</summary>
    NotApplicable,
    Match,
    Mismatch,
}

/// <summary>
/// For the event types whose digest is, by PFP v1.05 §10.4.1 (Table 9) and §10.4.4, the hash of
/// (part of) their event data, checks that every digest matches. A policy must not trust
/// decoded data that its digest does not cover. Where real firmware and boot loaders hash a
/// different but equally covering part of the data, each accepted variant is listed here.
/// </summary>
public static class EventDataDigests
{
    // Upstream GRUB logs "grub_cmd: …" and hashes the command without its NUL; Red Hat's
    // GRUB logs "grub_cmd …" and hashes the command with its NUL (rhel8-uefi fixture).
    private static readonly byte[][] GrubPrefixes = [.. new[]
    {
        "grub_cmd: ", "kernel_cmdline: ", "module_cmdline: ", "grub_cmd ", "grub_kernel_cmdline ", "kernel_cmdline ", "module_cmdline ",
    }.Select(Encoding.ASCII.GetBytes)];

    /// <summary>The byte ranges the digest may be defined over; empty when the type's digest is not over its data.</summary>
    public static IReadOnlyList<ReadOnlyMemory<byte>> MeasuredBytes(UntrustedEvent e)
    {
        switch (e.UntrustedType)
        {
            case TcgEventType.Separator:
            case TcgEventType.Action:
            case TcgEventType.EfiAction:
            case TcgEventType.EfiVariableDriverConfig:
            case TcgEventType.EfiVariableBoot2:
            case TcgEventType.EfiGptEvent:
            case TcgEventType.EfiGptEvent2:
            case TcgEventType.SCrtmVersion:
            case TcgEventType.OmitBootDeviceEvents:
                return [e.Data];
            // EV_EFI_VARIABLE_BOOT: PFP §10.4.4 puts the digest over UEFI_VARIABLE_DATA.VariableData,
            // much firmware hashes the whole structure (Arch Linux workstation fixture).
            // EV_EFI_VARIABLE_AUTHORITY: the whole structure, but shim hashes only the
            // EFI_SIGNATURE_DATA (cos, debian-10 fixtures). Either covers the decoded contents.
            case TcgEventType.EfiVariableBoot:
            case TcgEventType.EfiVariableAuthority:
                return VariableData(e.Data) is { } v ? [e.Data, v] : [e.Data];
            // EV_IPL in PCR 8 (GRUB commands, kernel command line) and PCR 12 (systemd-boot's
            // UTF-16 command line) describes what was hashed. In PCR 9 (files GRUB read) and
            // PCR 14 (shim's MOK lists) the digest is of content the event only names.
            case TcgEventType.Ipl when e.Pcr is 8 or 12:
                return IplCandidates(e.Data);
            default:
                return [];
        }
    }

    public static DataDigestStatus Check(UntrustedEvent e)
    {
        var candidates = MeasuredBytes(e);
        if (candidates.Count == 0 || !e.Digests.Any(d => TpmHash.Computable(d.Algorithm)))
        {
            return DataDigestStatus.NotApplicable;
        }
        foreach (var c in candidates)
        {
            if (AllMatch(e, c.Span))
            {
                return DataDigestStatus.Match;
            }
        }
        return DataDigestStatus.Mismatch;
    }

    private static bool AllMatch(UntrustedEvent e, ReadOnlySpan<byte> measured)
    {
        Span<byte> buffer = stackalloc byte[64];
        foreach (var d in e.Digests)
        {
            if (!TpmHash.Computable(d.Algorithm))
            {
                continue;
            }
            int n = CryptographicOperations.HashData(TpmHash.Name(d.Algorithm), measured, buffer);
            if (!CryptographicOperations.FixedTimeEquals(buffer[..n], d.Digest.Span))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>UEFI_VARIABLE_DATA (PFP §10.4.4 Table 12): GUID, UnicodeNameLength u64, VariableDataLength u64, name (UTF-16), data.</summary>
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

    private static List<ReadOnlyMemory<byte>> IplCandidates(ReadOnlyMemory<byte> data)
    {
        var body = data;
        foreach (var prefix in GrubPrefixes)
        {
            if (data.Span.StartsWith(prefix))
            {
                body = data[prefix.Length..];
                break;
            }
        }
        var list = new List<ReadOnlyMemory<byte>> { body };
        if (body.Length > 0 && body.Span[^1] == 0)
        {
            list.Add(body[..^1]);
        }
        return list;
    }
}

namespace Rempart.Attestation.Decoding;

/// <summary>
/// The one table of deviations from the PFP layouts that real logs show and the decoders accept
/// (and report on the decoded record) instead of turning into a <see cref="DecodeError"/>. Each is
/// bounded: anything beyond the bound is malformed.
/// </summary>
public static class DecodingQuirks
{
    /// <summary>
    /// shim and GRUB build UEFI_IMAGE_LOAD_EVENT as a C struct whose size counts the DevicePath[1]
    /// placeholder and alignment padding, then add LengthOfDevicePath: their
    /// EV_EFI_BOOT_SERVICES_APPLICATION events carry 8 or 9 bytes after the device path (seen in the
    /// go-tpm-tools, keylime, tpm2-tools and tpm2-tss fixture logs). go-attestation and tpm2-tools
    /// also read only LengthOfDevicePath bytes. Reported as <see cref="ImageLoadEvent.TrailingBytes"/>.
    /// </summary>
    public const int MaxImageLoadTrailingBytes = 16;

    /// <summary>
    /// Older shim measured EV_EFI_VARIABLE_AUTHORITY with 6 bytes after VariableData that
    /// VariableDataLength does not count (fixtures: sb_cert, cos-85/93, debian-10, event-postcode).
    /// Reported as <see cref="UefiVariableData.TrailingBytes"/>.
    /// </summary>
    public const int MaxAuthorityTrailingBytes = 8;

    /// <summary>
    /// GCE firmware pads its SP800-155 Event3 EV_NO_ACTION data with zero bytes after
    /// PlatformCertLocator (6 in the fixtures). Reported as <see cref="Sp800155Event.PaddingBytes"/>.
    /// </summary>
    public const int MaxSp800155ZeroPadding = 16;

    /// <summary>
    /// shim logs its own vendor certificate ("Shim") and, in older versions, the db certificate
    /// that verified GRUB as a bare DER certificate, without the EFI_SIGNATURE_DATA owner GUID
    /// (go-attestation calls this ErrSigMissingGUID). True when the data is exactly one DER
    /// SEQUENCE; the decoder then also requires it to parse as a certificate before reading it
    /// as bare (an owner GUID and certificate would need the GUID itself to be a DER header whose
    /// length ends at the data's end).
    /// </summary>
    public static bool AuthorityWithoutOwner(ReadOnlySpan<byte> data) =>
        CertificateSummary.TryDerLength(data, out int length) && length == data.Length;

    /// <summary>
    /// systemd-boot as in the arch-linux fixtures measured its UTF-16 kernel command line (EV_IPL,
    /// PCR 8) with one extra 0x00 byte, an odd length (tpm2_eventlog also warns that event's digest
    /// does not match its data). A lone trailing NUL byte after whole UTF-16 units is dropped before
    /// the data is read as UTF-16.
    /// </summary>
    public static ReadOnlySpan<byte> TrimOddUtf16Nul(ReadOnlySpan<byte> data) =>
        data.Length % 2 == 1 && data[^1] == 0 ? data[..^1] : data;
}

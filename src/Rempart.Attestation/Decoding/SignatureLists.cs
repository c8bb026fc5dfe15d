using System.Formats.Asn1;
using System.Globalization;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Nodes;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>
/// An X.509 certificate found in a signature database or authority event: the fields a policy
/// names, and the DER (a slice of the event data).
/// </summary>
public sealed record CertificateSummary(
    string Subject,
    string Issuer,
    string SerialNumber,
    DateTimeOffset NotBefore,
    DateTimeOffset NotAfter,
    string Sha256Fingerprint,
    ReadOnlyMemory<byte> Der)
{
    public JsonObject ToJson() => new()
    {
        ["subject"] = Subject,
        ["issuer"] = Issuer,
        ["serialNumber"] = SerialNumber,
        ["notBefore"] = NotBefore.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture),
        ["notAfter"] = NotAfter.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture),
        ["sha256"] = Sha256Fingerprint,
        ["der"] = Convert.ToBase64String(Der.Span),
    };

    /// <summary>
    /// Reads the certificate (RFC 5280 §4.1, DER) at the start of <paramref name="data"/>: the
    /// TBSCertificate's serial number, issuer, validity and subject, with System.Formats.Asn1 (bytes
    /// after the outer SEQUENCE are not part of it). This summarizes; it verifies nothing. Returns
    /// null and a reason when the bytes are not a certificate.
    /// </summary>
    public static CertificateSummary? TryParse(ReadOnlyMemory<byte> data, out string? error)
    {
        if (!TryDerLength(data.Span, out int length))
        {
            error = "not a DER SEQUENCE that fits in the data";
            return null;
        }
        var der = data[..length];
        try
        {
            var certificate = new AsnReader(der, AsnEncodingRules.DER).ReadSequence();
            var tbs = certificate.ReadSequence();
            if (tbs.PeekTag().HasSameClassAndValue(new Asn1Tag(TagClass.ContextSpecific, 0)))
            {
                tbs.ReadEncodedValue();
            }
            var serial = tbs.ReadIntegerBytes();
            tbs.ReadSequence();
            var issuer = tbs.ReadEncodedValue();
            var validity = tbs.ReadSequence();
            var notBefore = ReadTime(validity);
            var notAfter = ReadTime(validity);
            validity.ThrowIfNotEmpty();
            var subject = tbs.ReadEncodedValue();
            tbs.ReadSequence();
            certificate.ReadSequence();
            certificate.ReadBitString(out _);
            certificate.ThrowIfNotEmpty();
            error = null;
            return new CertificateSummary(
                new X500DistinguishedName(subject.Span).Name,
                new X500DistinguishedName(issuer.Span).Name,
                Convert.ToHexStringLower(serial.Span),
                notBefore,
                notAfter,
                Convert.ToHexStringLower(SHA256.HashData(der.Span)),
                der);
        }
        catch (Exception e) when (e is AsnContentException or CryptographicException)
        {
            error = e.Message;
            return null;
        }
    }

    private static DateTimeOffset ReadTime(AsnReader r) =>
        r.PeekTag().HasSameClassAndValue(Asn1Tag.UtcTime) ? r.ReadUtcTime() : r.ReadGeneralizedTime();

    /// <summary>The total length of a DER SEQUENCE (tag 0x30, definite length) at the start of <paramref name="b"/>.</summary>
    internal static bool TryDerLength(ReadOnlySpan<byte> b, out int total)
    {
        total = 0;
        if (b.Length < 2 || b[0] != 0x30)
        {
            return false;
        }
        int header = 2;
        long length = b[1];
        if (length >= 0x80)
        {
            int bytes = (int)length - 0x80;
            if (bytes is < 1 or > 3 || b.Length < 2 + bytes)
            {
                return false;
            }
            length = 0;
            for (int i = 0; i < bytes; i++)
            {
                length = (length << 8) | b[2 + i];
            }
            header += bytes;
        }
        if (header + length > b.Length)
        {
            return false;
        }
        total = header + (int)length;
        return true;
    }
}

/// <summary>
/// EFI_SIGNATURE_DATA (UEFI 2.10 §32.4.1): the owner GUID and the signature data, which is a
/// certificate for EFI_CERT_X509_GUID lists and a hash for the hash types. <see cref="Certificate"/>
/// is set when the data parses as an X.509 certificate; <see cref="CertificateError"/> says why not
/// when it should have.
/// </summary>
public sealed record SignatureEntry(Guid? Owner, ReadOnlyMemory<byte> Data, CertificateSummary? Certificate, string? CertificateError = null)
{
    public JsonObject ToJson()
    {
        var o = new JsonObject { ["owner"] = Owner is { } g ? DecodingText.GuidJson(g) : null };
        if (Certificate is not null)
        {
            o["certificate"] = Certificate.ToJson();
        }
        else
        {
            o["data"] = Convert.ToHexStringLower(Data.Span);
        }
        if (CertificateError is not null)
        {
            o["certificateError"] = CertificateError;
        }
        return o;
    }

    public string Describe() => Certificate is { } c
        ? $"cert {DecodingText.Quote(c.Subject)} sha256:{c.Sha256Fingerprint[..16]}…"
        : CertificateError is not null
            ? $"unparsable cert ({Data.Length} bytes: {CertificateError})"
            : Convert.ToHexStringLower(Data.Span);
}

/// <summary>
/// EFI_SIGNATURE_LIST (UEFI 2.10 §32.4.1): SignatureType, SignatureListSize, SignatureHeaderSize,
/// SignatureSize, a header, then (SignatureListSize - 28 - SignatureHeaderSize) / SignatureSize
/// EFI_SIGNATURE_DATA entries. The value of PK, KEK, db and dbx is a sequence of these.
/// </summary>
public sealed record SignatureList(
    Guid SignatureType,
    uint SignatureListSize,
    uint SignatureHeaderSize,
    uint SignatureSize,
    ReadOnlyMemory<byte> SignatureHeader,
    IReadOnlyList<SignatureEntry> Signatures)
{
    private const int HeaderBytes = 16 + 4 + 4 + 4;

    public JsonObject ToJson() => new()
    {
        ["signatureType"] = DecodingText.GuidJson(SignatureType),
        ["signatureListSize"] = SignatureListSize,
        ["signatureHeaderSize"] = SignatureHeaderSize,
        ["signatureSize"] = SignatureSize,
        ["signatures"] = new JsonArray([.. Signatures.Select(s => (JsonNode)s.ToJson())]),
    };

    /// <summary>Reads a whole signature database value: lists until the data ends.</summary>
    internal static IReadOnlyList<SignatureList> ReadAll(ref LeReader r)
    {
        var lists = new List<SignatureList>();
        while (!r.AtEnd)
        {
            lists.Add(Read(ref r));
        }
        return lists;
    }

    private static SignatureList Read(ref LeReader r)
    {
        if (r.Remaining < HeaderBytes)
        {
            throw r.Error($"a {HeaderBytes}-byte EFI_SIGNATURE_LIST header ({r.Remaining} bytes remain)");
        }
        var type = r.Guid("SignatureType");
        long sizeAt = r.Offset;
        uint listSize = r.U32("SignatureListSize");
        uint headerSize = r.U32("SignatureHeaderSize");
        uint signatureSize = r.U32("SignatureSize");
        if (listSize < HeaderBytes + (ulong)headerSize)
        {
            throw new EventLogFormatException(sizeAt,
                $"a SignatureListSize of at least {HeaderBytes} + SignatureHeaderSize ({headerSize}) (got {listSize})");
        }
        long bodyAt = r.Offset;
        var body = r.Take(listSize - HeaderBytes, $"the {listSize}-byte EFI_SIGNATURE_LIST (SignatureListSize)");
        var br = r.Sub(body, bodyAt);
        var header = br.Take(headerSize, "SignatureHeader");
        int entriesBytes = br.Remaining;
        if (entriesBytes > 0 && (signatureSize < 16 || entriesBytes % signatureSize != 0))
        {
            throw new EventLogFormatException(sizeAt + 8,
                $"a SignatureSize of at least 16 that divides the {entriesBytes} signature bytes (got {signatureSize})");
        }
        int count = entriesBytes == 0 ? 0 : entriesBytes / (int)signatureSize;
        int expectedData = type == UefiGuids.CertSha256 ? 32 : -1;
        if (expectedData >= 0 && count > 0 && signatureSize != 16 + expectedData)
        {
            throw new EventLogFormatException(sizeAt + 8, $"a SignatureSize of {16 + expectedData} for EFI_CERT_SHA256_GUID (got {signatureSize})");
        }
        var entries = new List<SignatureEntry>(count);
        for (int i = 0; i < count; i++)
        {
            var owner = br.Guid($"SignatureOwner of signature {i}");
            var data = br.Take(signatureSize - 16, $"SignatureData of signature {i}");
            entries.Add(Entry(type, owner, data));
        }
        return new SignatureList(type, listSize, headerSize, signatureSize, header, entries);
    }

    private static SignatureEntry Entry(Guid type, Guid owner, ReadOnlyMemory<byte> data)
    {
        if (type != UefiGuids.CertX509)
        {
            return new SignatureEntry(owner, data, null);
        }
        var cert = CertificateSummary.TryParse(data, out var error);
        return new SignatureEntry(owner, data, cert, error);
    }
}

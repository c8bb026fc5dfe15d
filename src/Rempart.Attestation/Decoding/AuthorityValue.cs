using System.Text.Json.Nodes;
using Rempart.Attestation.EventLog;

namespace Rempart.Attestation.Decoding;

/// <summary>
/// The EFI_SIGNATURE_DATA (UEFI 2.10 §32.4.1) an EV_EFI_VARIABLE_AUTHORITY event records (PFP
/// §3.3.4.8): the db (or MokList, Shim, vendor_db) entry that verified an image, with its owner.
/// <see cref="OwnerMissing"/> marks the shim variant that logs the bare certificate without the
/// owner GUID (see <see cref="DecodingQuirks.AuthorityWithoutOwner"/>).
/// </summary>
public sealed record AuthorityValue(SignatureEntry Entry, bool OwnerMissing) : UefiVariableValue
{
    public override JsonObject ToJson()
    {
        var o = new JsonObject { ["kind"] = "signature-data", ["signature"] = Entry.ToJson() };
        if (OwnerMissing)
        {
            o["ownerMissing"] = true;
        }
        return o;
    }

    public override string Describe()
    {
        string owner = Entry.Owner is { } g ? $"owner {DecodingText.NamedGuid(g)}" : "no owner GUID";
        return $"{Entry.Describe()}, {owner}";
    }

    internal static AuthorityValue Read(ref LeReader r)
    {
        long at = r.Offset;
        var rest = r.Take(r.Remaining, "EFI_SIGNATURE_DATA");
        if (DecodingQuirks.AuthorityWithoutOwner(rest.Span))
        {
            var bare = CertificateSummary.TryParse(rest, out _);
            if (bare is not null)
            {
                return new AuthorityValue(new SignatureEntry(null, rest, bare), OwnerMissing: true);
            }
        }
        if (rest.Length < 16)
        {
            throw new EventLogFormatException(at, $"an EFI_SIGNATURE_DATA of at least 16 bytes (SignatureOwner) (got {rest.Length})");
        }
        var er = r.Sub(rest, at);
        var owner = er.Guid("SignatureOwner");
        var data = er.Take(er.Remaining, "SignatureData");
        var cert = CertificateSummary.TryParse(data, out var error);
        bool looksLikeCert = CertificateSummary.TryDerLength(data.Span, out _);
        return new AuthorityValue(new SignatureEntry(owner, data, cert, looksLikeCert ? error : null), OwnerMissing: false);
    }
}

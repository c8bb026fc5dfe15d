using System.Formats.Asn1;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Rempart.LoadGen;

/// <summary>
/// A certificate authority the load generator makes for its software TPMs' EK certificates, in
/// the place a TPM manufacturer's CA would be. Its certificate is written as PEM into the folder
/// given to the Guardian as <c>--trusted-ek-cas</c>; nothing else ever trusts it. EK certificates
/// follow the shape of the TCG EK Credential Profile 2.0 (§3.2): an empty subject, a critical
/// subjectAltName holding the TPM manufacturer, model and version (§3.2.9), keyEncipherment for
/// an RSA EK (§3.2.7), not a CA.
/// </summary>
public sealed class SoftwareEkCa : IDisposable
{
    public const string PemFileName = "rempart-loadgen-software-tpm-ek-ca.pem";

    private static readonly DateTimeOffset NotBefore = DateTimeOffset.UtcNow.AddDays(-1);
    private static readonly DateTimeOffset NotAfter = DateTimeOffset.UtcNow.AddYears(10);

    // TCG OIDs (TCG EK Credential Profile 2.0, §3.2.9): tcg-at-tpmManufacturer, tcg-at-tpmModel, tcg-at-tpmVersion.
    private const string TpmManufacturerOid = "2.23.133.2.1";
    private const string TpmModelOid = "2.23.133.2.2";
    private const string TpmVersionOid = "2.23.133.2.3";

    /// <summary>The manufacturer id the software TPMs claim: "RMPT", not a registered vendor.</summary>
    public const string ManufacturerId = "id:524D5054";

    private readonly ECDsa _key;

    public SoftwareEkCa()
    {
        _key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest("CN=Rempart load generator software-TPM EK CA (not a TPM manufacturer)", _key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        Certificate = req.CreateSelfSigned(NotBefore, NotAfter);
    }

    /// <summary>The CA's certificate (with its private key, which never leaves this process).</summary>
    public X509Certificate2 Certificate { get; }

    /// <summary>Writes the CA certificate, PEM, into <paramref name="trustedEkCaDir"/>; returns the file.</summary>
    public string WritePem(string trustedEkCaDir)
    {
        Directory.CreateDirectory(trustedEkCaDir);
        var path = Path.Combine(trustedEkCaDir, PemFileName);
        File.WriteAllText(path, Certificate.ExportCertificatePem());
        return path;
    }

    /// <summary>An EK certificate (DER) for the RSA EK <paramref name="ek"/>.</summary>
    public byte[] IssueEkCertificate(RSA ek)
    {
        var req = new CertificateRequest(new X500DistinguishedName(""), new PublicKey(ek), HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyEncipherment, true));
        req.CertificateExtensions.Add(TpmSubjectAltName());
        req.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(Certificate, true, false));
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7F;
        using var cert = req.Create(Certificate.SubjectName, X509SignatureGenerator.CreateForECDsa(_key), NotBefore, NotAfter, serial);
        return cert.RawData;
    }

    /// <summary>
    /// subjectAltName (critical: the subject is empty) with one directoryName [4] whose RDN holds
    /// the TPM manufacturer, model and version attributes as UTF8Strings.
    /// </summary>
    private static X509Extension TpmSubjectAltName()
    {
        var w = new AsnWriter(AsnEncodingRules.DER);
        using (w.PushSequence())
        {
            // directoryName [4] Name: Name is a CHOICE, so the tag is explicit around the RDNSequence.
            using (w.PushSequence(new Asn1Tag(TagClass.ContextSpecific, 4, isConstructed: true)))
            using (w.PushSequence())
            using (w.PushSetOf())
            {
                foreach (var (oid, value) in new[] { (TpmManufacturerOid, ManufacturerId), (TpmModelOid, "rempart-loadgen"), (TpmVersionOid, "id:00010002") })
                {
                    using (w.PushSequence())
                    {
                        w.WriteObjectIdentifier(oid);
                        w.WriteCharacterString(UniversalTagNumber.UTF8String, value);
                    }
                }
            }
        }
        return new X509Extension("2.5.29.17", w.Encode(), critical: true);
    }

    public void Dispose()
    {
        Certificate.Dispose();
        _key.Dispose();
    }
}

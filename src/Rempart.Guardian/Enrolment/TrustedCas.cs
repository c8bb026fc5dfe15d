using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Rempart.Guardian.Enrolment;

/// <summary>The folder of trusted TPM CA certificates (PEM, possibly several per file, or DER).</summary>
public static class TrustedCas
{
    public static IReadOnlyList<X509Certificate2> Load(string dir)
    {
        var list = new List<X509Certificate2>();
        if (!Directory.Exists(dir))
        {
            return list;
        }
        foreach (var file in Directory.GetFiles(dir).Order(StringComparer.Ordinal))
        {
            var bytes = File.ReadAllBytes(file);
            try
            {
                if (System.Text.Encoding.ASCII.GetString(bytes).Contains("-----BEGIN CERTIFICATE-----", StringComparison.Ordinal))
                {
                    var all = new X509Certificate2Collection();
                    all.ImportFromPem(System.Text.Encoding.ASCII.GetString(bytes));
                    list.AddRange(all);
                }
                else
                {
                    list.Add(X509CertificateLoader.LoadCertificate(bytes));
                }
            }
            catch (CryptographicException)
            {
                // Not a certificate (a README, a key): ignored, never trusted.
            }
        }
        return list;
    }
}

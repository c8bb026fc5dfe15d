using System.Diagnostics;
using System.Security.Cryptography;

namespace Rempart.LoadGen;

/// <summary>
/// The machine's raw ECDSA P-256 rates, measured in the same run as the load so the attestation
/// rate can be read as a ratio: bare .NET (OpenSSL) <c>VerifyData</c> / <c>SignData</c> over SHA-256
/// of a quote-sized message, with keys imported once, P1363 signatures — what the Guardian does per
/// attestation (verify the quote, verify the binding key's certification, sign the ES256 token).
/// </summary>
public sealed record CryptoRates(int Cores, double VerifyPerSecondOneThread, double VerifyPerSecondAllCores, double SignPerSecondOneThread)
{
    /// <summary>CPU seconds of the Guardian's signature work in one attestation: 2 ECDSA verifies + 1 ECDSA sign.</summary>
    public double GuardianCryptoSecondsPerAttestation => (2 / VerifyPerSecondOneThread) + (1 / SignPerSecondOneThread);

    /// <summary>
    /// Attestations per second the machine could verify if it did nothing but that signature work
    /// on every core (the all-core verify rate scaled by the 2 verifies + 1 sign).
    /// </summary>
    public double CryptoCeiling => VerifyPerSecondAllCores / VerifyPerSecondOneThread / GuardianCryptoSecondsPerAttestation;

    public static CryptoRates Measure(TimeSpan each)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var message = RandomNumberGenerator.GetBytes(145); // a TPMS_ATTEST quote over three banks is about this size
        var signature = key.SignData(message, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
        var publicKey = key.ExportParameters(false);

        double Verify(ECDsa k, TimeSpan d) => Rate(d, () =>
        {
            if (!k.VerifyData(message, signature, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation))
            {
                throw new CryptographicException("the baseline signature does not verify");
            }
        });

        using (var warm = ECDsa.Create(publicKey))
        {
            Verify(warm, TimeSpan.FromMilliseconds(200));
        }
        double one;
        using (var verifier = ECDsa.Create(publicKey))
        {
            one = Verify(verifier, each);
        }
        int cores = Environment.ProcessorCount;
        var rates = new double[cores];
        Parallel.For(0, cores, new ParallelOptions { MaxDegreeOfParallelism = cores }, i =>
        {
            using var k = ECDsa.Create(publicKey);
            rates[i] = Verify(k, each);
        });
        var sign = Rate(each, () => key.SignData(message, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation));
        return new CryptoRates(cores, one, rates.Sum(), sign);
    }

    private static double Rate(TimeSpan duration, Action op)
    {
        long count = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < duration)
        {
            for (int i = 0; i < 50; i++)
            {
                op();
            }
            count += 50;
        }
        return count / sw.Elapsed.TotalSeconds;
    }
}

namespace Rempart.KeyProtection.Tests;

/// <summary>The cheap P-384 point check used at parse time agrees with OpenSSL's key import.</summary>
public sealed class EcKeysTests
{
    [Fact]
    public void P384_check_agrees_with_the_platform_import()
    {
        int checkedPoints = 0;
        for (int i = 0; i < 20; i++)
        {
            using var k = System.Security.Cryptography.ECDiffieHellman.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP384);
            var spki = k.ExportSubjectPublicKeyInfo();
            Assert.True(EcKeys.IsP384(spki));

            // The negated point (x, p - y) is on the curve too.
            var p = System.Numerics.BigInteger.Pow(2, 384) - System.Numerics.BigInteger.Pow(2, 128) - System.Numerics.BigInteger.Pow(2, 96) + System.Numerics.BigInteger.Pow(2, 32) - 1;
            var y = new System.Numerics.BigInteger(spki.AsSpan(72, 48), isUnsigned: true, isBigEndian: true);
            var negated = (byte[])spki.Clone();
            (p - y).TryWriteBytes(negated.AsSpan(72, 48), out int written, isUnsigned: true, isBigEndian: true);
            if (written == 48)
            {
                Assert.True(EcKeys.IsP384(negated));
                Assert.True(PlatformAccepts(negated));
            }

            foreach (int offset in new[] { 24, 50, 71, 72, 100, 119 })
            {
                var bad = (byte[])spki.Clone();
                bad[offset] ^= 0x01;
                Assert.Equal(PlatformAccepts(bad), EcKeys.IsP384(bad));
                Assert.False(EcKeys.IsP384(bad));
                checkedPoints++;
            }
        }
        Assert.Equal(120, checkedPoints);
        Assert.False(EcKeys.IsP384([]));
        Assert.False(EcKeys.IsP384(new byte[120]));
        using var p256 = System.Security.Cryptography.ECDiffieHellman.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        Assert.False(EcKeys.IsP384(p256.ExportSubjectPublicKeyInfo()));
    }

    private static bool PlatformAccepts(byte[] spki)
    {
        using var k = System.Security.Cryptography.ECDiffieHellman.Create();
        try
        {
            k.ImportSubjectPublicKeyInfo(spki, out _);
            return true;
        }
        catch (System.Security.Cryptography.CryptographicException)
        {
            return false;
        }
    }
}

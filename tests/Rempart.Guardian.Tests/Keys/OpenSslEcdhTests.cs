using System.Reflection;
using System.Security.Cryptography;
using Rempart.Guardian.Keys;
using Rempart.KeyProtection;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Guardian.Tests.Keys;

/// <summary>
/// The ECDH derivation through libcrypto without the per-derivation peer check: the same Z as .NET's
/// <c>DeriveRawSecretAgreement</c> and as <c>openssl pkeyutl -derive</c>, only for keys that went
/// through <see cref="PeerKey.Import"/>, right under many threads, and a key disposed under a
/// derivation is not freed under it.
/// </summary>
public sealed class OpenSslEcdhTests
{
    [Fact]
    public void The_OpenSSL_derivation_is_available_in_this_process()
    {
        // Debian 12, .NET on OpenSSL 3: if this fails, every other test here ran the fallback only.
        Assert.Null(OpenSslEcdh.Unavailable);
    }

    [Fact]
    public void Z_is_the_one_dotnet_derives_for_many_random_key_pairs_both_ways()
    {
        for (int i = 0; i < 64; i++)
        {
            using var guardian = new ECDiffieHellmanOpenSsl(ECCurve.NamedCurves.nistP384);
            using var handle = guardian.DuplicateKeyHandle();
            using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
            var imported = PeerKey.Import(peer.ExportSubjectPublicKeyInfo());

            var z = OpenSslEcdh.Derive(handle, imported);
            Assert.Equal(48, z.Length);
            Assert.Equal(guardian.DeriveRawSecretAgreement(imported.PublicKey), z);
            Assert.Equal(peer.DeriveRawSecretAgreement(guardian.PublicKey), z);
        }
    }

    [Fact]
    public void Z_is_the_one_openssl_pkeyutl_derives()
    {
        var dir = Directory.CreateTempSubdirectory("rempart-ecdh-").FullName;
        try
        {
            for (int i = 0; i < 4; i++)
            {
                using var guardian = new ECDiffieHellmanOpenSsl(ECCurve.NamedCurves.nistP384);
                using var handle = guardian.DuplicateKeyHandle();
                using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
                var spki = peer.ExportSubjectPublicKeyInfo();
                // A throw-away test key, in a private temporary folder, removed below.
                File.WriteAllText(Path.Combine(dir, "priv.pem"), PemEncoding.WriteString("PRIVATE KEY", guardian.ExportPkcs8PrivateKey()));
                File.WriteAllText(Path.Combine(dir, "peer.pem"), PemEncoding.WriteString("PUBLIC KEY", spki));

                Tool.Run("openssl", ["pkeyutl", "-derive", "-inkey", "priv.pem", "-peerkey", "peer.pem", "-out", "z.bin"], cwd: dir).Ok();

                var expected = File.ReadAllBytes(Path.Combine(dir, "z.bin"));
                Assert.Equal(48, expected.Length);
                Assert.Equal(expected, OpenSslEcdh.Derive(handle, PeerKey.Import(spki)));
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>Points the import refuses: the derivation never sees them (it takes only a <see cref="PeerKey"/>).</summary>
    public static TheoryData<string, byte[]> MoreBadPeers()
    {
        using var good = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        var spki = good.ExportSubjectPublicKeyInfo();
        var p = good.ExportParameters(false);
        var data = FileKeyProviderTests.BadPeers();
        // X = the field prime p (out of range: X mod p = 0 is a different number), Y kept.
        var prime = Convert.FromHexString("fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff");
        var outOfRange = spki.ToArray();
        prime.CopyTo(outOfRange, spki.Length - 96);
        data.Add("x-equals-p", outOfRange);
        // Both coordinates zero: not on P-384 (b ≠ 0).
        var zeros = spki.ToArray();
        Array.Clear(zeros, spki.Length - 96, 96);
        data.Add("x-y-zero", zeros);
        // The same point, compressed (02/03 ‖ X): .NET does not read it; it must be refused, not misread.
        data.Add("compressed", Compressed(spki, p));
        return data;
    }

    [Theory]
    [MemberData(nameof(MoreBadPeers))]
    public void An_invalid_point_is_refused_at_import_with_keys_peer_invalid(string name, byte[] spki)
    {
        var e = KeyChecks.Throws("keys.peer.invalid", () => PeerKey.Import(spki));
        Assert.DoesNotContain("   at ", e.Message, StringComparison.Ordinal);
        Assert.False(string.IsNullOrEmpty(name));
    }

    [Fact]
    public void Only_PeerKey_Import_makes_the_keys_the_derivation_takes()
    {
        // What makes skipping the per-derivation check sound is structural: the derivation takes a
        // PeerKey, and PeerKey has no constructor anyone but Import can call.
        var derive = typeof(OpenSslEcdh).GetMethod(nameof(OpenSslEcdh.Derive))!;
        Assert.Equal(typeof(PeerKey), derive.GetParameters()[1].ParameterType);
        var ctors = typeof(PeerKey).GetConstructors(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic);
        Assert.All(ctors, c => Assert.True(c.IsPrivate, $"{c} is not private"));
        var factories = typeof(PeerKey).GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly)
            .Where(m => m.ReturnType == typeof(PeerKey)).Select(m => m.Name);
        Assert.Equal(["Import"], factories);
    }

    [Fact]
    public void Parallel_derivations_with_shared_keys_all_give_the_right_secret()
    {
        var guardians = Enumerable.Range(0, 2).Select(_ => new ECDiffieHellmanOpenSsl(ECCurve.NamedCurves.nistP384)).ToArray();
        var peers = Enumerable.Range(0, 4).Select(_ => ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384)).ToArray();
        try
        {
            var handles = guardians.Select(g => g.DuplicateKeyHandle()).ToArray();
            var imported = peers.Select(k => PeerKey.Import(k.ExportSubjectPublicKeyInfo())).ToArray();
            var expected = new byte[2, 4][];
            for (int g = 0; g < 2; g++)
            {
                for (int k = 0; k < 4; k++)
                {
                    expected[g, k] = peers[k].DeriveRawSecretAgreement(guardians[g].PublicKey);
                }
            }
            int wrong = 0;
            Parallel.For(0, 400, new ParallelOptions { MaxDegreeOfParallelism = 16 }, i =>
            {
                if (!OpenSslEcdh.Derive(handles[i % 2], imported[i / 2 % 4]).AsSpan().SequenceEqual(expected[i % 2, i / 2 % 4]))
                {
                    Interlocked.Increment(ref wrong);
                }
            });
            Assert.Equal(0, wrong);
            foreach (var h in handles)
            {
                h.Dispose();
            }
        }
        finally
        {
            foreach (var k in guardians.Cast<IDisposable>().Concat(peers))
            {
                k.Dispose();
            }
        }
    }

    [Fact]
    public void A_key_disposed_while_derivations_run_is_not_freed_under_them()
    {
        using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        var imported = PeerKey.Import(peer.ExportSubjectPublicKeyInfo());
        for (int round = 0; round < 8; round++)
        {
            var guardian = new ECDiffieHellmanOpenSsl(ECCurve.NamedCurves.nistP384);
            var expected = peer.DeriveRawSecretAgreement(guardian.PublicKey);
            var handle = guardian.DuplicateKeyHandle();
            guardian.Dispose(); // the handle is now the key's last reference
            int right = 0, refused = 0, wrong = 0;
            var threads = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
            {
                for (int i = 0; i < 20; i++)
                {
                    try
                    {
                        if (OpenSslEcdh.Derive(handle, imported).AsSpan().SequenceEqual(expected))
                        {
                            Interlocked.Increment(ref right);
                        }
                        else
                        {
                            Interlocked.Increment(ref wrong);
                        }
                    }
                    catch (ObjectDisposedException)
                    {
                        Interlocked.Increment(ref refused);
                    }
                }
            })).ToList();
            threads.ForEach(t => t.Start());
            Thread.Sleep(round * 3);
            handle.Dispose();
            threads.ForEach(t => t.Join());
            Assert.Equal(0, wrong);
            Assert.Equal(80, right + refused);
        }
    }

    [Fact]
    public void The_file_provider_derives_through_OpenSSL_and_agrees_with_the_peer()
    {
        var dir = Directory.CreateTempSubdirectory("rempart-ecdh-provider-").FullName;
        try
        {
            using var p = FileKeyProvider.Open(dir, "openssl-ecdh-test-secret-0123456789"u8);
            for (int i = 0; i < 16; i++)
            {
                KeyChecks.EcdhMatchesPeer(p, p.ActiveKey);
            }
            p.Rotate();
            KeyChecks.EcdhMatchesPeer(p, p.ActiveKey);
            KeyChecks.EcdhMatchesPeer(p, p.EncryptionKeys.Single(k => k.Status == GuardianKeyStatus.Retiring));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static byte[] Compressed(byte[] spki, ECParameters p)
    {
        // SubjectPublicKeyInfo with the same algorithm identifier and a 49-byte compressed point.
        var w = new System.Formats.Asn1.AsnWriter(System.Formats.Asn1.AsnEncodingRules.DER);
        using (w.PushSequence())
        {
            using (w.PushSequence())
            {
                w.WriteObjectIdentifier("1.2.840.10045.2.1");
                w.WriteObjectIdentifier("1.3.132.0.34");
            }
            byte[] point = [(byte)(0x02 | (p.Q.Y![^1] & 1)), .. p.Q.X!];
            w.WriteBitString(point);
        }
        Assert.NotEqual(spki.Length, w.GetEncodedLength());
        return w.Encode();
    }
}

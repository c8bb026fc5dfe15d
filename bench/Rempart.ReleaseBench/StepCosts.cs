using System.Diagnostics;
using System.Numerics;
using System.Security.Cryptography;
using System.Text;
using Rempart.Attestation.Protocol;
using Rempart.KeyProtection;
using Rempart.Tpm.Structures;

namespace Rempart.ReleaseBench;

/// <summary>One step's cost in CPU µs on one thread (the median of interleaved rounds).</summary>
public sealed record StepCost(string Step, string What, double Microseconds);

/// <summary>
/// Where a release's CPU time goes, step by step, measured in this process on one thread: each
/// cryptographic step of the Guardian's release path (ReleaseService, KeyProviderBase,
/// FileKeyProvider, HealthTokens, KeyProtector, ReleaseWrap) done the way the Guardian does it,
/// with the same key types and sizes. The steps run interleaved, round after round, so a noisy
/// neighbour slows them alike; the ratios between them are what to read. HTTP, TLS, JSON binding
/// and the store (two reads, one audit append) are not here: they are the rest of the Guardian's
/// measured CPU time per release.
/// </summary>
public static class StepCosts
{
    public static IReadOnlyList<StepCost> Measure(TimeSpan total, TpmtPublic bindingKey)
    {
        ArgumentNullException.ThrowIfNull(bindingKey);
        using var guardianKey = new ECDiffieHellmanOpenSsl(ECCurve.NamedCurves.nistP384);
        using var guardianHandle = guardianKey.DuplicateKeyHandle();
        using var signer = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var spki = guardianKey.ExportSubjectPublicKeyInfo();
        var info = new GuardianKeyInfo(KeyIds.Of(spki), spki, GuardianKeyStatus.Active, DateTimeOffset.UtcNow);
        var metadata = GuardianMetadata.Create("g-bench", "bench", null, [info], signer.ExportSubjectPublicKeyInfo(), DateTimeOffset.UtcNow,
            d => signer.SignData(d, HashAlgorithmName.SHA256));
        using var owner = OwnerKey.Generate();
        var (kp, vmk) = KeyProtector.Create("vm-steps", new ReleasePolicy(ShieldingLevel.Shielded, ["g"]), owner.PublicKey, [metadata]);
        var kpJson = Encoding.UTF8.GetBytes(kp.ToJson());
        var vmkBytes = vmk.Bytes.ToArray();
        vmk.Dispose();

        using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        var peerSpki = peer.ExportSubjectPublicKeyInfo();
        using var peerImported = new ECDiffieHellmanOpenSsl();
        peerImported.ImportSubjectPublicKeyInfo(peerSpki, out _);
        using var peerHandle = peerImported.DuplicateKeyHandle();
        var n = ((TpmBufferId)bindingKey.Unique).Buffer;
        var em = RandomNumberGenerator.GetBytes(n.Length);
        em[0] = 0;
        using var verifier = ECDsa.Create(signer.ExportParameters(false));
        var token = RandomNumberGenerator.GetBytes(620); // an ES256 health token's signing input is about this long
        var sig = signer.SignData(token, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
        var oneImport = new OneImport(guardianHandle);
        var cached = new CachedImport(guardianHandle);

        var steps = new (string Step, string What, Action Op)[]
        {
            ("ecdh.derive", "P-384 DeriveRawSecretAgreement, peer imported once (the raw operation; OpenSSL re-checks the peer in each)",
                () => guardianKey.DeriveRawSecretAgreement(peerImported.PublicKey)),
            ("ecdh.derive-unchecked", "P-384 EVP_PKEY_derive, validate_peer 0, peer checked once on import (FileKeyProvider.Agree, OpenSslEcdh)",
                () => UncheckedEcdh.Derive(guardianHandle, peerHandle)),
            ("ecdh.import-spki", "P-384 ImportSubjectPublicKeyInfo of the KP's epk (PeerKey.Import: a PeerKeyCache miss)",
                () => { using var k = ECDiffieHellman.Create(); k.ImportSubjectPublicKeyInfo(peerSpki, out _); k.ExportParameters(false); }),
            ("token.verify", "P-256 VerifyData of a token-sized message, key imported once (HealthTokens)",
                () => verifier.VerifyData(token, sig, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation)),
            ("kp.parse", "KeyProtector.Parse (JSON, two P-384 on-curve checks in BigInteger)",
                () => KeyProtector.Parse(kpJson)),
            ("kp.unwrap", "KeyProtector.UnwrapWithGuardian, peer key not cached: one SPKI import (checked) + unchecked derive, HKDF, AES-GCM, MAC",
                () => { using var k = kp.UnwrapWithGuardian(oneImport, [info]); }),
            ("kp.unwrap-cached", "KeyProtector.UnwrapWithGuardian, peer key cached (PeerKeyCache hit): unchecked derive, HKDF, AES-GCM, MAC",
                () => { using var k = kp.UnwrapWithGuardian(cached, [info]); }),
            ("wrap.seal", "ReleaseWrap.Seal: RSA-2048 OAEP-SHA256 encrypt to the binding key (EME-OAEP in C#, RSAEP by OpenSSL with RSA_NO_PADDING, the key imported once)",
                () => ReleaseWrap.Seal(bindingKey, vmkBytes, "0123456789abcdef0123456789abcdef")),
            ("wrap.rsaep-biginteger", "the RSA-2048 public operation alone in BigInteger.ModPow (what wrap.seal did before; not in the sums)",
                () => BigInteger.ModPow(new BigInteger(em, isUnsigned: true, isBigEndian: true), 65537, new BigInteger(n, isUnsigned: true, isBigEndian: true))),
        };
        var samples = steps.Select(_ => new List<double>()).ToArray();
        var slice = TimeSpan.FromMilliseconds(60);
        foreach (var (_, _, op) in steps)
        {
            op(); // JIT and first-use costs out of the way
        }
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < total)
        {
            for (int i = 0; i < steps.Length; i++)
            {
                samples[i].Add(PerOpMicroseconds(slice, steps[i].Op));
            }
        }
        return steps.Select((s, i) => new StepCost(s.Step, s.What, Median(samples[i]))).ToList();
    }

    /// <summary>
    /// The release path's crypto as the file provider does it, from the steps: KP parse, unwrap
    /// (derive, HKDF/AES-GCM/MAC, plus the peer key's import when <paramref name="cached"/> is false),
    /// the token's verification, the RSA-OAEP seal.
    /// </summary>
    public static double FileProviderCryptoMicroseconds(IReadOnlyList<StepCost> steps, bool cached)
    {
        double Of(string step) => steps.FirstOrDefault(s => s.Step == step)?.Microseconds ?? 0;
        return Of("kp.parse") + Of(cached ? "kp.unwrap-cached" : "kp.unwrap") + Of("token.verify") + Of("wrap.seal");
    }

    /// <summary>This thread's CPU time per operation (not wall time: on a shared machine the thread also waits for a core).</summary>
    private static double PerOpMicroseconds(TimeSpan slice, Action op)
    {
        long n = 0;
        var cpu = ThreadCpu.Now();
        var sw = Stopwatch.StartNew();
        do
        {
            op();
            n++;
        }
        while (sw.Elapsed < slice);
        return (ThreadCpu.Now() - cpu).TotalMicroseconds / n;
    }

    private static double Median(List<double> v)
    {
        v.Sort();
        return v.Count == 0 ? 0 : v[v.Count / 2];
    }

    /// <summary>The key provider on a cache miss: the peer's SPKI imported once, then the derivation.</summary>
    private sealed class OneImport(SafeEvpPKeyHandle key) : IGuardianKeyOperations
    {
        public byte[] DeriveSharedSecret(string kid, ReadOnlySpan<byte> peerSubjectPublicKeyInfo)
        {
            using var peer = new ECDiffieHellmanOpenSsl();
            peer.ImportSubjectPublicKeyInfo(peerSubjectPublicKeyInfo, out _);
            peer.ExportParameters(false);
            using var handle = peer.DuplicateKeyHandle();
            return UncheckedEcdh.Derive(key, handle);
        }

        public byte[] SignEs256(ReadOnlySpan<byte> data) => throw new NotSupportedException();
    }

    /// <summary>The key provider on a cache hit: the peer imported before, only the derivation.</summary>
    private sealed class CachedImport(SafeEvpPKeyHandle key) : IGuardianKeyOperations
    {
        private SafeEvpPKeyHandle? _peer;

        public byte[] DeriveSharedSecret(string kid, ReadOnlySpan<byte> peerSubjectPublicKeyInfo)
        {
            if (_peer is null)
            {
                using var peer = new ECDiffieHellmanOpenSsl();
                peer.ImportSubjectPublicKeyInfo(peerSubjectPublicKeyInfo, out _);
                _peer = peer.DuplicateKeyHandle();
            }
            return UncheckedEcdh.Derive(key, _peer);
        }

        public byte[] SignEs256(ReadOnlySpan<byte> data) => throw new NotSupportedException();
    }
}

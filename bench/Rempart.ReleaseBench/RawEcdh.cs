using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;

namespace Rempart.ReleaseBench;

/// <summary>
/// A raw private-key operation rate: one thread, and all cores (one key handle or session per
/// thread, run at once). For the releases' ratio the all-core rate is the honest baseline: the
/// Guardian uses every core too.
/// </summary>
public sealed record RawRate(string What, double PerSecondOneThread, double PerSecondAllCores, int Cores)
{
    /// <summary>CPU µs per operation on one thread (this process's CPU; a PKCS#11 module's work runs in it too).</summary>
    public double CpuMicroseconds { get; init; }
}

/// <summary>
/// The Guardian keys' raw operation, measured in the same run as the releases: one P-384 ECDH
/// derivation (what unwrapping a key protector costs the key provider). In .NET (OpenSSL), as the
/// file provider does it, and as C_DeriveKey(CKM_ECDH1_DERIVE, CKD_NULL) + reading the derived
/// value + destroying it on a PKCS#11 token, exactly the calls of the pkcs11 provider.
/// </summary>
public static class RawEcdh
{
    /// <summary>DER of the namedCurve OID secp384r1 (1.3.132.0.34), as CKA_EC_PARAMS.</summary>
    private static readonly byte[] P384Params = [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];

    private static readonly Pkcs11InteropFactories Factories = new();

    static RawEcdh()
    {
        // Pkcs11Interop 5.3 calls dlopen through "libdl", a name only development packages install (as in the Guardian).
        NativeLibrary.SetDllImportResolver(typeof(Pkcs11InteropFactories).Assembly, (name, assembly, path) =>
            name == "libdl" && NativeLibrary.TryLoad("libdl.so.2", assembly, path, out var handle) ? handle : IntPtr.Zero);
    }

    /// <summary>
    /// .NET: <c>DeriveRawSecretAgreement</c> of a P-384 private key with a peer public key imported once
    /// (the bare private-key operation); <see cref="DotNetWithImport"/> adds the peer import the file provider does per release.
    /// </summary>
    public static RawRate DotNet(TimeSpan each)
    {
        using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        var peerPublic = peer.ExportParameters(false);
        double Run(TimeSpan d)
        {
            using var key = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
            using var other = ECDiffieHellman.Create(peerPublic);
            return Rate(d, () => key.DeriveRawSecretAgreement(other.PublicKey));
        }
        Run(TimeSpan.FromMilliseconds(200));
        var cpu = ThreadCpu.Now();
        double one = Run(each);
        double cpuMicroseconds = (ThreadCpu.Now() - cpu).TotalMicroseconds / (one * each.TotalSeconds);
        return new RawRate("ECDH P-384, .NET", one, AllCores(each, Run), Environment.ProcessorCount) { CpuMicroseconds = cpuMicroseconds };
    }

    /// <summary>One thread: the peer point imported into a new key each time, then the derivation (FileKeyProvider.Agree).</summary>
    public static double DotNetWithImport(TimeSpan each)
    {
        using var key = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        var q = peer.ExportParameters(false).Q;
        return Rate(each, () =>
        {
            using var other = ECDiffieHellman.Create(new ECParameters { Curve = ECCurve.NamedCurves.nistP384, Q = q });
            key.DeriveRawSecretAgreement(other.PublicKey);
        });
    }

    /// <summary>
    /// PKCS#11: a P-384 key pair generated in the token (sensitive, never extractable, CKA_DERIVE, a
    /// session object), then C_DeriveKey(CKM_ECDH1_DERIVE, CKD_NULL) into a session secret,
    /// C_GetAttributeValue(CKA_VALUE), C_DestroyObject — one session per thread. The first derived
    /// value is checked against .NET's ECDH from the peer's side.
    /// </summary>
    public static RawRate Pkcs11(string module, string tokenLabel, string pinFile, TimeSpan each)
    {
        var pin = File.ReadAllText(pinFile).Trim();
        using var library = Factories.Pkcs11LibraryFactory.LoadPkcs11Library(Factories, module, AppType.MultiThreaded);
        var slot = library.GetSlotList(SlotsType.WithTokenPresent).FirstOrDefault(s => s.GetTokenInfo().Label.Trim() == tokenLabel)
            ?? throw new InvalidOperationException($"no PKCS#11 token '{tokenLabel}' in {module}");
        var sessions = new List<ISession>();
        ISession Open()
        {
            var s = slot.OpenSession(SessionType.ReadWrite);
            try
            {
                s.Login(CKU.CKU_USER, pin);
            }
            catch (Pkcs11Exception e) when (e.RV == CKR.CKR_USER_ALREADY_LOGGED_IN)
            {
            }
            lock (sessions)
            {
                sessions.Add(s);
            }
            return s;
        }
        try
        {
            var first = Open();
            var (priv, tokenPoint) = Generate(first);
            using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
            var q = peer.ExportParameters(false).Q;
            byte[] peerPoint = [0x04, .. q.X!, .. q.Y!];
            using (var tokenPublic = ECDiffieHellman.Create(new ECParameters
            {
                Curve = ECCurve.NamedCurves.nistP384,
                Q = new ECPoint { X = tokenPoint[1..49], Y = tokenPoint[49..] },
            }))
            {
                if (!Derive(first, priv, peerPoint).AsSpan().SequenceEqual(peer.DeriveRawSecretAgreement(tokenPublic.PublicKey)))
                {
                    throw new CryptographicException("the token's ECDH does not agree with .NET's");
                }
            }
            Rate(TimeSpan.FromMilliseconds(200), () => Derive(first, priv, peerPoint));
            var cpu = ThreadCpu.Now();
            double one = Rate(each, () => Derive(first, priv, peerPoint));
            double cpuMicroseconds = (ThreadCpu.Now() - cpu).TotalMicroseconds / (one * each.TotalSeconds);
            double all = AllCores(each, d =>
            {
                var s = Open();
                return Rate(d, () => Derive(s, priv, peerPoint));
            });
            return new RawRate("ECDH P-384, PKCS#11 C_DeriveKey", one, all, Environment.ProcessorCount) { CpuMicroseconds = cpuMicroseconds };
        }
        finally
        {
            foreach (var s in sessions)
            {
                s.Dispose();
            }
        }
    }

    private static byte[] Derive(ISession s, IObjectHandle key, byte[] peerPoint)
    {
        var f = Factories;
        var mechanism = f.MechanismFactory.Create(CKM.CKM_ECDH1_DERIVE, f.MechanismParamsFactory.CreateCkEcdh1DeriveParams((ulong)CKD.CKD_NULL, null, peerPoint));
        var template = new List<IObjectAttribute>
        {
            f.ObjectAttributeFactory.Create(CKA.CKA_CLASS, CKO.CKO_SECRET_KEY),
            f.ObjectAttributeFactory.Create(CKA.CKA_KEY_TYPE, CKK.CKK_GENERIC_SECRET),
            f.ObjectAttributeFactory.Create(CKA.CKA_TOKEN, false),
            f.ObjectAttributeFactory.Create(CKA.CKA_PRIVATE, true),
            f.ObjectAttributeFactory.Create(CKA.CKA_SENSITIVE, false),
            f.ObjectAttributeFactory.Create(CKA.CKA_EXTRACTABLE, true),
            f.ObjectAttributeFactory.Create(CKA.CKA_VALUE_LEN, 48UL),
        };
        var secret = s.DeriveKey(mechanism, key, template);
        try
        {
            return s.GetAttributeValue(secret, [CKA.CKA_VALUE])[0].GetValueAsByteArray();
        }
        finally
        {
            s.DestroyObject(secret);
        }
    }

    /// <summary>A P-384 derivation key pair (session objects), and the public point 04 || X || Y.</summary>
    private static (IObjectHandle Private, byte[] Point) Generate(ISession s)
    {
        var f = Factories.ObjectAttributeFactory;
        var id = RandomNumberGenerator.GetBytes(16);
        var publicTemplate = new List<IObjectAttribute>
        {
            f.Create(CKA.CKA_TOKEN, false), f.Create(CKA.CKA_PRIVATE, false), f.Create(CKA.CKA_ID, id),
            f.Create(CKA.CKA_EC_PARAMS, P384Params), f.Create(CKA.CKA_DERIVE, true),
        };
        var privateTemplate = new List<IObjectAttribute>
        {
            f.Create(CKA.CKA_TOKEN, false), f.Create(CKA.CKA_PRIVATE, true), f.Create(CKA.CKA_SENSITIVE, true),
            f.Create(CKA.CKA_EXTRACTABLE, false), f.Create(CKA.CKA_ID, id), f.Create(CKA.CKA_DERIVE, true),
        };
        s.GenerateKeyPair(Factories.MechanismFactory.Create(CKM.CKM_EC_KEY_PAIR_GEN), publicTemplate, privateTemplate, out var pub, out var priv);
        var raw = s.GetAttributeValue(pub, [CKA.CKA_EC_POINT])[0].GetValueAsByteArray();
        // CKA_EC_POINT is the DER OCTET STRING around the uncompressed point (04 61 | 04 X Y).
        var point = raw.Length == 99 && raw[0] == 0x04 && raw[1] == 0x61 ? raw[2..] : raw;
        if (point.Length != 97 || point[0] != 0x04)
        {
            throw new CryptographicException("the token's P-384 public point is not uncompressed");
        }
        return (priv, point);
    }

    /// <summary>Runs <paramref name="run"/> on every core at once and sums the rates.</summary>
    private static double AllCores(TimeSpan each, Func<TimeSpan, double> run)
    {
        int cores = Environment.ProcessorCount;
        var rates = new double[cores];
        var threads = Enumerable.Range(0, cores).Select(i => new Thread(() => rates[i] = run(each))).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        return rates.Sum();
    }

    private static double Rate(TimeSpan duration, Action op)
    {
        long count = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < duration)
        {
            for (int i = 0; i < 10; i++)
            {
                op();
            }
            count += 10;
        }
        return count / sw.Elapsed.TotalSeconds;
    }
}

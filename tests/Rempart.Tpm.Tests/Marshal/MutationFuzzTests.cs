using System.Buffers.Binary;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Templates;

namespace Rempart.Tpm.Tests.Marshal;

/// <summary>
/// Truncation and seeded mutation of valid encodings: a parser either returns a structure
/// that writes back to exactly the bytes it read, or throws <see cref="TpmFormatException"/>
/// with an offset inside the input. Any other exception type is a parser bug (STYLE.md §3).
/// </summary>
public sealed class MutationFuzzTests
{
    private const int MutationsPerInput = 2_000;

    /// <summary>A valid encoding and "parse, then write back" for its structure.</summary>
    private sealed record Subject(byte[] Valid, Func<byte[], byte[]> Reencode);

    private static readonly Func<byte[], byte[]> Public = b => TpmtPublic.ParseSized(b).ToSizedBytes();
    private static readonly Func<byte[], byte[]> Attest = b => TpmsAttest.Parse(b).ToBytes();
    private static readonly Func<byte[], byte[]> Signature = b => TpmtSignature.Parse(b).ToBytes();

    private static readonly TpmsClockInfo Clock = new(0x0000_0012_3456_789A, 7, 2, true);

    private static readonly Dictionary<string, Subject> Subjects = new()
    {
        ["tpm2b_public_rsa_ak"] = new(KeyTemplates.AkRsa2048.WithUnique(new TpmBufferId(Fill(256, 1))).ToSizedBytes(), Public),
        ["tpm2b_public_rsa_ek"] = new(KeyTemplates.EkRsa2048.WithUnique(new TpmBufferId(Fill(256, 2))).ToSizedBytes(), Public),
        ["tpm2b_public_ecc_ak"] = new(KeyTemplates.AkEccP256.WithUnique(new TpmsEccPoint(Fill(32, 3), Fill(32, 4))).ToSizedBytes(), Public),
        ["tpm2b_public_ecc_ek"] = new(KeyTemplates.EkEccP256.WithUnique(new TpmsEccPoint(Fill(32, 5), Fill(32, 6))).ToSizedBytes(), Public),
        ["tpm2b_public_keyedhash"] = new(KeyTemplates.SealedData(Fill(32, 7)).WithUnique(new TpmBufferId(Fill(32, 8))).ToSizedBytes(), Public),
        ["tpm2b_public_keyedhash_hmac_key"] = new(new TpmtPublic(TpmAlgId.KeyedHash, TpmAlgId.Sha256,
            TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.UserWithAuth | TpmaObject.Sign, [],
            new TpmsKeyedHashParms(new TpmtScheme(TpmAlgId.Hmac, TpmAlgId.Sha384)), new TpmBufferId(Fill(32, 9))).ToSizedBytes(), Public),
        ["tpm2b_public_symcipher"] = new(new TpmtPublic(TpmAlgId.SymCipher, TpmAlgId.Sha256,
            TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.SensitiveDataOrigin | TpmaObject.UserWithAuth | TpmaObject.Decrypt | TpmaObject.Sign,
            Fill(32, 10), new TpmsSymCipherParms(TpmtSymDef.Aes256Cfb), new TpmBufferId(Fill(32, 11))).ToSizedBytes(), Public),
        ["attest_quote"] = new(AttestBytes(new TpmsQuoteInfo(
            new TpmlPcrSelection([new TpmsPcrSelection(TpmAlgId.Sha1, [0, 7]), new TpmsPcrSelection(TpmAlgId.Sha256, [0, 1, 2, 3, 4, 5, 6, 7, 14])]),
            Fill(32, 12))), Attest),
        ["attest_certify"] = new(AttestBytes(new TpmsCertifyInfo(Name(13), Name(14))), Attest),
        ["attest_creation"] = new(AttestBytes(new TpmsCreationInfo(Name(15), Fill(32, 16))), Attest),
        ["attest_nv"] = new(AttestBytes(new TpmsNvCertifyInfo(Name(17), 4, Fill(24, 18))), Attest),
        ["attest_time"] = new(AttestBytes(new TpmsTimeAttestInfo(new TpmsTimeInfo(0x0000_0001_0000_0002, Clock), 0x0102_0304_0506_0708)), Attest),
        ["signature_rsassa"] = new(TpmtSignature.RsaSignature(TpmAlgId.RsaSsa, TpmAlgId.Sha256, Fill(256, 19)).ToBytes(), Signature),
        ["signature_rsapss"] = new(TpmtSignature.RsaSignature(TpmAlgId.RsaPss, TpmAlgId.Sha384, Fill(384, 20)).ToBytes(), Signature),
        ["signature_ecdsa"] = new(TpmtSignature.EccSignature(TpmAlgId.EcDsa, TpmAlgId.Sha256, Fill(32, 21), Fill(32, 22)).ToBytes(), Signature),
    };

    public static TheoryData<string> Names
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (var name in Subjects.Keys)
            {
                data.Add(name);
            }
            return data;
        }
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void Valid_encoding_round_trips(string name)
    {
        var s = Subjects[name];
        Assert.Equal(s.Valid, s.Reencode(s.Valid));
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void Every_truncation_throws_TpmFormatException(string name)
    {
        var s = Subjects[name];
        for (int length = 0; length < s.Valid.Length; length++)
        {
            var cut = s.Valid[..length];
            var ex = Assert.Throws<TpmFormatException>(() => s.Reencode(cut));
            Assert.InRange(ex.Offset, 0, length);
        }
    }

    /// <summary>
    /// Every UINT16 window (so every TPM2B_ size, algorithm selector and tag) set to 0, 0xFFFF,
    /// one more and one less than it was: deterministic, so no size field is left to chance.
    /// </summary>
    [Theory]
    [MemberData(nameof(Names))]
    public void Every_uint16_window_rewritten_parses_or_throws_TpmFormatException(string name)
    {
        var s = Subjects[name];
        var failures = new List<string>();
        for (int at = 0; at + 2 <= s.Valid.Length; at++)
        {
            ushort was = BinaryPrimitives.ReadUInt16BigEndian(s.Valid.AsSpan(at));
            foreach (ushort v in new[] { (ushort)0, (ushort)0xFFFF, (ushort)(was + 1), (ushort)(was - 1) })
            {
                var m = (byte[])s.Valid.Clone();
                BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(at), v);
                Check(s, m, $"uint16 at {at} = 0x{v:x4}", failures);
            }
        }
        Assert.True(failures.Count == 0, Report(name, failures));
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void Seeded_mutations_parse_and_round_trip_or_throw_TpmFormatException(string name)
    {
        var s = Subjects[name];
        var rng = new Random(Seed(name));
        var failures = new List<string>();
        int parsed = 0;
        for (int i = 0; i < MutationsPerInput; i++)
        {
            var (m, how) = Mutate(s.Valid, rng);
            if (Check(s, m, $"#{i} {how}", failures))
            {
                parsed++;
            }
        }
        Assert.True(failures.Count == 0, Report(name, failures));
        // Not every mutation may be rejected: bytes inside digests and keys carry no structure.
        Assert.InRange(parsed, 1, MutationsPerInput - 1);
    }

    /// <summary>Returns whether <paramref name="m"/> parsed; records anything but a parse-and-round-trip or a TpmFormatException.</summary>
    private static bool Check(Subject s, byte[] m, string how, List<string> failures)
    {
        byte[] again;
        try
        {
            again = s.Reencode(m);
        }
        catch (TpmFormatException e)
        {
            if (e.Offset < 0 || e.Offset > m.Length)
            {
                failures.Add($"{how}: offset {e.Offset} outside 0..{m.Length} ({e.Message}) input {Convert.ToHexString(m)}");
            }
            return false;
        }
#pragma warning disable CA1031 // any other exception type is exactly what this test looks for
        catch (Exception e)
#pragma warning restore CA1031
        {
            failures.Add($"{how}: {e.GetType().FullName}: {e.Message} input {Convert.ToHexString(m)}");
            return false;
        }
        if (!again.AsSpan().SequenceEqual(m))
        {
            failures.Add($"{how}: parsed but writes back {Convert.ToHexString(again)} for input {Convert.ToHexString(m)}");
            return true;
        }
        if (!s.Reencode(again).AsSpan().SequenceEqual(again))
        {
            failures.Add($"{how}: re-parse of the written bytes differs for {Convert.ToHexString(again)}");
        }
        return true;
    }

    /// <summary>One to three stacked edits: bit flips, byte values, insertions, removals, UINT16 size fields at 0/0xFFFF/±1.</summary>
    private static (byte[] Bytes, string How) Mutate(byte[] valid, Random rng)
    {
        var b = new List<byte>(valid);
        var how = new List<string>();
        int edits = 1 + rng.Next(3);
        for (int e = 0; e < edits; e++)
        {
            int at = b.Count == 0 ? 0 : rng.Next(b.Count);
            switch (rng.Next(8))
            {
                case 0 when b.Count > 0:
                    int bit = rng.Next(8);
                    b[at] ^= (byte)(1 << bit);
                    how.Add($"flip bit {bit} of {at}");
                    break;
                case 1 when b.Count > 0:
                    byte v = (byte)rng.Next(256);
                    b[at] = v;
                    how.Add($"byte {at} = 0x{v:x2}");
                    break;
                case 2:
                    int n = 1 + rng.Next(4);
                    var extra = new byte[n];
                    rng.NextBytes(extra);
                    b.InsertRange(at, extra);
                    how.Add($"insert {n} at {at}");
                    break;
                case 3 when b.Count > 0:
                    int k = Math.Min(1 + rng.Next(4), b.Count - at);
                    b.RemoveRange(at, k);
                    how.Add($"remove {k} at {at}");
                    break;
                case 4 or 5 or 6 when b.Count >= 2:
                    at = Math.Min(at, b.Count - 2);
                    ushort was = (ushort)((b[at] << 8) | b[at + 1]);
                    ushort now = rng.Next(4) switch
                    {
                        0 => 0,
                        1 => 0xFFFF,
                        2 => (ushort)(was + 1),
                        _ => (ushort)(was - 1),
                    };
                    b[at] = (byte)(now >> 8);
                    b[at + 1] = (byte)now;
                    how.Add($"uint16 at {at} = 0x{now:x4}");
                    break;
                default:
                    int cut = rng.Next(b.Count + 1);
                    b.RemoveRange(cut, b.Count - cut);
                    how.Add($"truncate to {cut}");
                    break;
            }
        }
        return ([.. b], string.Join(", ", how));
    }

    private static string Report(string name, List<string> failures) =>
        $"{name}: {failures.Count} failures, first ones:\n" + string.Join("\n", failures.Take(5));

    /// <summary>FNV-1a of the name: a seed that is the same on every run (string.GetHashCode is not).</summary>
    private static int Seed(string name)
    {
        uint h = 2166136261;
        foreach (char c in name)
        {
            h = (h ^ c) * 16777619;
        }
        return (int)(h & 0x7FFFFFFF);
    }

    private static byte[] AttestBytes(TpmuAttest attested)
    {
        var type = attested switch
        {
            TpmsQuoteInfo => TpmSt.AttestQuote,
            TpmsCertifyInfo => TpmSt.AttestCertify,
            TpmsCreationInfo => TpmSt.AttestCreation,
            TpmsNvCertifyInfo => TpmSt.AttestNv,
            _ => TpmSt.AttestTime,
        };
        return new TpmsAttest(TpmConstants.Generated, type, Name(30), Fill(32, 31), Clock, 0x2023_0117_0000_0001, attested).ToBytes();
    }

    private static byte[] Name(int seed) => [0x00, 0x0B, .. Fill(32, seed)];

    private static byte[] Fill(int length, int seed) => StructureNegativeTests.Fill(length, seed);
}

using System.Security.Cryptography;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;

namespace Rempart.Attestation.EventLog;

/// <summary>
/// PCR values a verified quote attests: bank → PCR → value. Only <see cref="Verify"/> makes
/// these, after the quote's signature, magic, type and nonce have verified and the claimed
/// values hash to the quoted digest; an API that needs trusted PCRs takes this type.
/// </summary>
public sealed class QuotedPcrs
{
    private QuotedPcrs(IReadOnlyDictionary<TpmAlgId, IReadOnlyDictionary<int, byte[]>> values, TpmsAttest attest)
    {
        Values = values;
        Attest = attest;
    }

    public IReadOnlyDictionary<TpmAlgId, IReadOnlyDictionary<int, byte[]>> Values { get; }

    /// <summary>The verified TPMS_ATTEST (clock, reset and restart counts, firmware version).</summary>
    public TpmsAttest Attest { get; }

    /// <summary>
    /// Verifies a quote and binds PCR values to it. <paramref name="claimed"/> are the values
    /// the host reported (untrusted); when null, the values of <paramref name="replayFallback"/>
    /// are tried instead (a log that replays to exactly the quoted digest needs no PCR values).
    /// Returns null with the failures when anything does not verify.
    /// </summary>
    public static QuotedPcrs? Verify(VerificationKey ak, ReadOnlySpan<byte> message, TpmtSignature signature, ReadOnlySpan<byte> nonce,
        Func<TpmAlgId, int, byte[]?>? claimed, out VerificationResult result, ReplayResult? replayFallback = null)
    {
        Func<TpmAlgId, int, byte[]?>? values = claimed;
        if (values is null && replayFallback is not null)
        {
            values = (b, p) => replayFallback.Banks.TryGetValue(b, out var m)
                ? (m.TryGetValue(p, out var v) ? v : EventLogReplay.Initial(b, p, p == 0 ? replayFallback.StartupLocality : (byte)0))
                : null;
        }
        result = AttestationVerifier.VerifyQuote(ak, message, signature, nonce, values ?? ((_, _) => null));
        if (!result.Valid || result.Attest?.Attested is not TpmsQuoteInfo q || values is null)
        {
            return null;
        }
        var map = new Dictionary<TpmAlgId, IReadOnlyDictionary<int, byte[]>>();
        foreach (var s in q.PcrSelect.Selections)
        {
            var bank = new SortedDictionary<int, byte[]>();
            foreach (int p in s.Pcrs)
            {
                bank[p] = (byte[])values(s.Hash, p)!.Clone();
            }
            map[s.Hash] = bank;
        }
        return new QuotedPcrs(map, result.Attest);
    }

    internal static bool Same(byte[] a, byte[] b) => CryptographicOperations.FixedTimeEquals(a, b);
}

using System.Globalization;
using Rempart.Attestation.Protocol;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Templates;

namespace Rempart.Host.Attestation;

/// <summary>
/// The evidence for the Guardian, and what the host keeps: the binding key's TPM2B_PRIVATE
/// contents and public area (to load it under the SRK later and decrypt what the Guardian
/// wraps to it) and the PCR selection its policy covers (to satisfy that policy with PolicyPCR).
/// </summary>
public sealed record CollectedEvidence(AttestationEvidence Evidence, byte[] BindingKeyPrivate, TpmtPublic BindingKeyPublic, TpmlPcrSelection BindingPcrs);

/// <summary>Evidence could not be collected; <see cref="Id"/> is stable (e.g. <c>evidence.pcrs-unstable</c>).</summary>
public sealed class EvidenceCollectionException(string id, string message) : Exception($"{id}: {message}")
{
    public string Id { get; } = id;
}

/// <summary>
/// Collects attestation evidence (DESIGN §3.2): TPM2_Quote (Part 3, §18.4) of every PCR of
/// every allocated bank with the AK and the Guardian's nonce, the PCR values that were quoted,
/// the event log, and a binding key — an RSA-2048 decryption key under the SRK whose authPolicy
/// is PolicyPCR (Part 3, §23.7) over the quoted values of <see cref="BindingPcrs"/> —
/// certified by the AK with TPM2_Certify (Part 3, §18.2) over the same nonce.
/// </summary>
public sealed class EvidenceCollector
{
    /// <summary>
    /// The binding key's attributes: bound to this TPM and this parent (never duplicable),
    /// generated inside the TPM, decrypt only, not restricted; no userWithAuth (only the PCR
    /// policy authorises use) and adminWithPolicy clear; noDA.
    /// </summary>
    public const TpmaObject BindingKeyAttributes =
        TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.SensitiveDataOrigin | TpmaObject.Decrypt | TpmaObject.NoDa;

    /// <summary>The largest nonce accepted: TPM2B_DATA holds a TPMT_HA (Part 2, §10.4.3), 64 bytes of digest here.</summary>
    public const int MaxNonceSize = TpmConstants.MaxDigestSize;

    private readonly TpmClient _tpm;

    /// <param name="tpm">The host TPM.</param>
    /// <param name="bindingPcrs">The PCRs the binding key's policy covers; sha256 PCRs 0–7 by default.</param>
    /// <param name="akKind">The enrolled AK: "rsa" (default) or "ecc".</param>
    /// <param name="maxQuoteAttempts">How many times to quote again when the PCRs change around a quote.</param>
    public EvidenceCollector(TpmClient tpm, TpmlPcrSelection? bindingPcrs = null, string akKind = "rsa", int maxQuoteAttempts = 5)
    {
        _ = KeyTemplates.Ak(akKind);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxQuoteAttempts, 1);
        var pcrs = bindingPcrs ?? DefaultBindingPcrs;
        if (pcrs.TotalPcrs == 0 || pcrs.Selections.Any(s => !TpmHash.Computable(s.Hash) || s.Pcrs.Count == 0))
        {
            throw new ArgumentException("the binding PCR selection needs at least one PCR, in banks of hashes this host can compute", nameof(bindingPcrs));
        }
        _tpm = tpm;
        BindingPcrs = pcrs;
        AkKind = akKind;
        MaxQuoteAttempts = maxQuoteAttempts;
    }

    public static TpmlPcrSelection DefaultBindingPcrs { get; } = TpmlPcrSelection.Of(TpmAlgId.Sha256, 0, 1, 2, 3, 4, 5, 6, 7);

    public TpmlPcrSelection BindingPcrs { get; }

    public string AkKind { get; }

    public int MaxQuoteAttempts { get; }

    /// <summary>The binding key's template: RSA-2048, SHA-256 Name, no scheme (the caller picks OAEP at decryption).</summary>
    public static TpmtPublic BindingKeyTemplate(byte[] authPolicy) => new(TpmAlgId.Rsa, TpmAlgId.Sha256, BindingKeyAttributes, authPolicy,
        new TpmsRsaParms(TpmtSymDef.Null, TpmtScheme.Null, 2048, 0), new TpmBufferId([]));

    /// <summary>The binding key's authPolicy for given PCR values: PolicyPCR(selection, H_sha256(values in selection order)).</summary>
    public static byte[] BindingPolicy(TpmlPcrSelection selection, Func<TpmAlgId, int, byte[]?> values) =>
        new PolicyDigest(TpmAlgId.Sha256).PolicyPcr(selection, PcrComposite.Digest(TpmAlgId.Sha256, selection, values)).Digest;

    /// <summary>
    /// Quotes, creates and certifies the binding key, checks the quote and the certification
    /// locally, and flushes everything it loaded. <paramref name="eventLog"/> may be empty.
    /// </summary>
    /// <exception cref="EvidenceCollectionException">
    /// <c>evidence.pcrs-unstable</c> (the PCRs kept changing), <c>evidence.quote</c> or
    /// <c>evidence.certify</c> (the TPM's output does not verify), <c>evidence.binding-pcrs</c>
    /// (a binding PCR is not allocated).
    /// </exception>
    public CollectedEvidence Collect(string hostId, ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> eventLog)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(hostId);
        if (nonce.IsEmpty || nonce.Length > MaxNonceSize)
        {
            throw new ArgumentException($"a nonce of 1 to {MaxNonceSize} bytes is required (got {nonce.Length})", nameof(nonce));
        }
        var nonceBytes = nonce.ToArray();
        var log = Convert.ToBase64String(eventLog);
        return Transients.Run(_tpm, t =>
        {
            var allocated = new TpmlPcrSelection(_tpm.GetPcrBanks().Selections.Where(s => s.Pcrs.Count > 0).ToList());
            var ak = _tpm.CreateAk(AkKind);
            t.Track(ak.Handle!);
            var (quote, pcrs) = QuoteStable(ak, nonceBytes, allocated);
            byte[]? Quoted(TpmAlgId bank, int pcr) =>
                pcrs.Banks.TryGetValue(bank, out var m) && m.TryGetValue(pcr, out var v) ? v : null;
            var missing = BindingPcrs.Enumerate().Where(x => Quoted(x.Bank, x.Pcr) is null).Select(x => $"{TpmHash.ToName(x.Bank)}:{x.Pcr}").ToList();
            if (missing.Count > 0)
            {
                throw new EvidenceCollectionException("evidence.binding-pcrs", $"binding PCRs {string.Join(", ", missing)} are not allocated in this TPM ({allocated})");
            }

            var srk = _tpm.CreateSrk();
            t.Track(srk.Handle!);
            if (_tpm.EncryptionSession is null)
            {
                t.Track(_tpm.EnableParameterEncryption(srk.Handle!, srk.Public));
            }
            var binding = _tpm.Create(srk.Handle!, BindingKeyTemplate(BindingPolicy(BindingPcrs, Quoted)));
            var loaded = t.Track(_tpm.Load(srk.Handle!, binding.Private, binding.Public));
            t.Flush(srk.Handle!);

            // Certify authorises the key in the ADMIN role: with adminWithPolicy clear, its (empty) authValue.
            var certify = _tpm.Certify(loaded, ak.Handle!, nonceBytes);
            var check = AttestationVerifier.VerifyCertify(ak.Public, certify.Message, certify.Signature, nonceBytes, binding.Public);
            if (!check.Valid)
            {
                throw new EvidenceCollectionException("evidence.certify", $"the TPM's certification of the binding key does not verify: {check}");
            }

            var evidence = new AttestationEvidence(
                hostId,
                Convert.ToHexStringLower(nonceBytes), // echoed exactly as the Guardian issued it (lowercase hex)
                Convert.ToBase64String(quote.Message),
                Convert.ToBase64String(quote.Signature.ToBytes()),
                ToWire(pcrs),
                log,
                Convert.ToBase64String(binding.Public.ToSizedBytes()),
                Convert.ToBase64String(certify.Message),
                Convert.ToBase64String(certify.Signature.ToBytes()));
            return new CollectedEvidence(evidence, binding.Private, binding.Public, BindingPcrs);
        });
    }

    /// <summary>
    /// Reads the PCRs, quotes them, reads them again, and accepts the quote only when both reads
    /// agree (values and pcrUpdateCounter, Part 3 §22.4) and the quoted digest verifies against
    /// them; otherwise quotes again, up to <see cref="MaxQuoteAttempts"/> times.
    /// </summary>
    private (SignedAttestation Quote, PcrValues Pcrs) QuoteStable(CreatedObject ak, byte[] nonce, TpmlPcrSelection selection)
    {
        for (int attempt = 1; ; attempt++)
        {
            var before = _tpm.PcrRead(selection);
            var quote = _tpm.Quote(ak.Handle!, nonce, selection);
            var after = _tpm.PcrRead(selection);
            if (Unchanged(before, after, selection))
            {
                var check = AttestationVerifier.VerifyQuote(ak.Public, quote.Message, quote.Signature, nonce,
                    (b, p) => after.Banks.TryGetValue(b, out var m) && m.TryGetValue(p, out var v) ? v : null);
                if (check.Failures.Any(f => f.Id != "quote.pcr-digest"))
                {
                    throw new EvidenceCollectionException("evidence.quote", $"the TPM's quote does not verify: {check}");
                }
                if (check.Attest?.Attested is TpmsQuoteInfo q && !q.PcrSelect.Enumerate().SequenceEqual(selection.Enumerate()))
                {
                    throw new EvidenceCollectionException("evidence.quote", $"the TPM quoted {q.PcrSelect}, not the allocated PCRs {selection}");
                }
                if (check.Valid)
                {
                    return (quote, after);
                }
            }
            if (attempt >= MaxQuoteAttempts)
            {
                throw new EvidenceCollectionException("evidence.pcrs-unstable", $"the PCRs changed around each of {attempt} quotes");
            }
        }
    }

    private static bool Unchanged(PcrValues before, PcrValues after, TpmlPcrSelection selection)
    {
        if (!before.Consistent || !after.Consistent || before.UpdateCounter != after.UpdateCounter)
        {
            return false;
        }
        foreach (var (bank, pcr) in selection.Enumerate())
        {
            if (!before.Banks.TryGetValue(bank, out var b) || !b.TryGetValue(pcr, out var x)
                || !after.Banks.TryGetValue(bank, out var a) || !a.TryGetValue(pcr, out var y) || !x.AsSpan().SequenceEqual(y))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>PCR values on the wire: bank name → PCR index → lowercase hex.</summary>
    private static Dictionary<string, Dictionary<string, string>> ToWire(PcrValues pcrs) =>
        pcrs.Banks.OrderBy(kv => kv.Key).ToDictionary(
            kv => TpmHash.ToName(kv.Key),
            kv => kv.Value.OrderBy(p => p.Key).ToDictionary(p => p.Key.ToString(CultureInfo.InvariantCulture), p => Convert.ToHexStringLower(p.Value)));
}

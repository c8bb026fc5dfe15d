using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text.Json;
using Rempart.Attestation.EventLog;
using Rempart.Attestation.Policy;
using Rempart.Attestation.Protocol;
using Rempart.Guardian.Enrolment;
using Rempart.Guardian.Storage;
using Rempart.Guardian.Tokens;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;

namespace Rempart.Guardian.Attestation;

/// <summary>
/// Attestation (DESIGN.md §3.2): single-use nonces, then evidence checked step by step, each
/// failure with a stable identifier: the host's state, the nonce, the quote (signature by the
/// enrolled AK, TPM_GENERATED, type, nonce, PCR digest, full banks), reset/restart counters and
/// clock, replay of the event log against the quoted PCRs, and the binding key (certified by
/// the AK over the same nonce, non-duplicable decryption key, policy = PolicyPCR over the quoted
/// values). Affirmed hosts get a health token; a failure revokes the host's tokens at once.
/// </summary>
public sealed class AttestationService(IGuardianStore store, GuardianOptions options, TimeProvider time, HealthTokens tokens, Audit audit, PolicyCatalog policies)
{
    /// <summary>PCRs the firmware event log must explain (PCR 10 is IMA's; 16 debug; 17-22 DRTM; 23 application).</summary>
    public static readonly int[] LogPcrs = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15];

    /// <summary>PCRs a binding key's policy covers: the platform's boot state (firmware, boot loader, Secure Boot).</summary>
    public static readonly TpmlPcrSelection BindingPcrs = TpmlPcrSelection.Of(TpmAlgId.Sha256, 0, 1, 2, 3, 4, 5, 6, 7);

    private const string PolicyId = "rempart.default";
    private const int PolicyVersion = 1;

    private readonly ConcurrentDictionary<string, VerificationKey> _akCache = new();

    /// <summary>Replayed logs by content (<see cref="ReplayLog"/>); emptied when it reaches <see cref="MaxKnownLogs"/>.</summary>
    private readonly ConcurrentDictionary<string, LogOutcome> _logs = new();

    private const int MaxKnownLogs = 1024;

    public async Task<NonceResponse> NonceAsync(string hostId, CancellationToken ct)
    {
        var nonce = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
        var expires = time.GetUtcNow() + options.NonceLifetime;
        // Stored only for a host that exists and is not removed (one statement: the check and the insert).
        if (!await store.InsertNonceForHostAsync(new NonceRecord(nonce, hostId, expires), ct))
        {
            throw new EnrolmentException("attest.host.unknown", $"no enrolled host {hostId}");
        }
        return new NonceResponse(nonce, expires);
    }

    /// <summary>Attests evidence as the wire strings carry it (base64 decoded here).</summary>
    public Task<AttestationResult> AttestAsync(AttestationEvidence evidence, CancellationToken ct) =>
        AttestAsync(evidence.HostId, evidence.Nonce, evidence.Pcrs, () => EvidenceBytes.Decode(evidence), ct);

    /// <summary>Attests evidence whose binary members the JSON reader already decoded.</summary>
    public Task<AttestationResult> AttestAsync(EvidenceBytes evidence, CancellationToken ct) =>
        AttestAsync(evidence.HostId, evidence.Nonce, evidence.Pcrs, () => evidence, ct);

    /// <param name="hostId">The host the evidence claims to come from.</param>
    /// <param name="nonceHex">The nonce it claims to answer.</param>
    /// <param name="pcrs">The PCR values it claims, by bank and index.</param>
    /// <param name="binary">The binary members, decoded only once the nonce is consumed; null when one is not base64.</param>
    /// <param name="ct">Cancellation.</param>
    private async Task<AttestationResult> AttestAsync(string hostId, string nonceHex, Dictionary<string, Dictionary<string, string>> pcrs,
        Func<EvidenceBytes?> binary, CancellationToken ct)
    {
        var now = time.GetUtcNow();
        var failures = new List<AttestationFailure>();
        void Fail(string id, string message) => failures.Add(new AttestationFailure(id, message));

        // The host and the nonce in one step: the nonce is consumed only for a host that may attest.
        var start = await store.TakeNonceForAttestationAsync(hostId, nonceHex, now, ct);
        var (host, nonceConsumed) = (start.Host, start.NonceConsumed);
        if (host is null || host.State == HostStates.Removed)
        {
            return Refused(hostId, "attest.host.unknown", $"no enrolled host {hostId}");
        }
        if (host.State == HostStates.Pending)
        {
            return Refused(host.Id, "attest.host.pending", "the host is enrolled but not yet approved into a host group");
        }
        if (!nonceConsumed)
        {
            // Anyone can replay old evidence: refused, audited, but the host's state is not changed
            // by evidence nobody has shown to come from its TPM.
            await audit.WriteAsync("attestation.refused", host.Id, new { reason = "attest.nonce" }, ct);
            return Refused(host.Id, "attest.nonce", "the nonce is unknown, expired, already used or was issued to another host");
        }
        var nonce = Convert.FromHexString(nonceHex);

        if (binary() is not { } evidence)
        {
            return await FailAsync(host, [new("evidence.format", "a binary field is not base64")], false, proven: false, ct);
        }
        var (quote, quoteSig, log, bkPub, bkCert, bkSig) = (evidence.Quote, evidence.QuoteSignature, evidence.EventLog,
            evidence.BindingKeyPublic, evidence.BindingKeyCertify, evidence.BindingKeyCertifySignature);

        // 1. The quote, by the AK enrolment bound to this host (never an AK from the evidence).
        var ak = _akCache.GetOrAdd(host.AkName, _ => new VerificationKey(TpmtPublic.ParseSized(host.AkPublic)));
        Dictionary<TpmAlgId, Dictionary<int, byte[]>> claimed;
        TpmtSignature signature;
        try
        {
            claimed = ParsePcrs(pcrs);
            signature = TpmtSignature.Parse(quoteSig);
        }
        catch (Exception e) when (e is FormatException or TpmFormatException)
        {
            return await FailAsync(host, [new("evidence.format", e.Message)], false, proven: false, ct);
        }
        var quoted = QuotedPcrs.Verify(ak, quote, signature, nonce,
            (b, p) => claimed.TryGetValue(b, out var m) && m.TryGetValue(p, out var v) ? v : null, out var quoteResult);
        foreach (var f in quoteResult.Failures)
        {
            Fail(f.Id, f.Message);
        }
        if (quoted is null)
        {
            // Only a quote the enrolled AK signed proves the evidence came from this host's TPM.
            bool proven = !failures.Any(f => f.Id is "quote.signature" or "quote.key");
            return await FailAsync(host, failures, false, proven, ct);
        }
        var q = (TpmsQuoteInfo)quoted.Attest.Attested;
        if (!q.PcrSelect.Selections.Any(s => s.Hash == TpmAlgId.Sha256 && s.Pcrs.Count == 24) || q.PcrSelect.Selections.Any(s => s.Pcrs.Count != 24))
        {
            Fail("attest.quote.selection", $"the quote must cover all 24 PCRs of every active bank, sha256 included (covers {q.PcrSelect})");
        }

        // 2. Reset/restart counters and clock, per host.
        var clock = quoted.Attest.ClockInfo;
        bool reboot = host.LastResetCount is { } lastReset && clock.ResetCount != lastReset;
        if (host.LastResetCount is { } lr && clock.ResetCount < lr)
        {
            Fail("attest.clock.reset-count", $"resetCount went back from {lr} to {clock.ResetCount}");
        }
        else if (!reboot && host.LastClock is { } lastClock && clock.Clock < lastClock)
        {
            Fail("attest.clock.rollback", $"the TPM clock went back from {lastClock} to {clock.Clock} without a reset");
        }
        if (!clock.Safe)
        {
            Fail("attest.clock.unsafe", "the TPM reports its clock may have gone back (safe = NO)");
        }

        // 3. The event log, replayed against the quoted PCRs.
        LogOutcome? replayed = null;
        try
        {
            replayed = ReplayLog(log, quoted);
            foreach (var v in replayed.Verification.Mismatched.Where(v => LogPcrs.Contains(v.Pcr)))
            {
                Fail(v.Id, $"{TpmHash.ToName(v.Bank)} PCR {v.Pcr}: quoted {Convert.ToHexStringLower(v.Quoted)}, the log replays to {(v.Replayed.Length == 0 ? "nothing" : Convert.ToHexStringLower(v.Replayed))}");
            }
        }
        catch (EventLogFormatException e)
        {
            Fail("eventlog.format", e.Message);
        }

        // 4. The binding key: certified by the AK over the same nonce, and sealed to the quoted boot state.
        CheckBindingKey(ak, bkPub, bkCert, bkSig, nonce, quoted, Fail, out var thumbprint);

        // 5. The host group's policy, over claims made only from verified evidence.
        string status = "affirming", policyId = PolicyId;
        int policyVersion = PolicyVersion;
        var warnings = new List<AttestationFailure>();
        var (policy, policyErrorId, policyError) = await policies.ForAttestationAsync(start, ct);
        if (policyErrorId is not null)
        {
            Fail(policyErrorId, policyError!);
        }
        else if (policy is not null && replayed is not null)
        {
            policyId = policy.Id;
            policyVersion = policy.Version;
            var result = replayed.Evaluate(policy, quoted);
            foreach (var f in result.Failures)
            {
                var failure = new AttestationFailure(f.Id, $"{f.Message} (expected {f.Expected}; actual {f.Actual}{(f.EventNumbers.Count > 0 ? "; events " + string.Join(",", f.EventNumbers) : "")})");
                (result.AuditOnly ? warnings : failures).Add(failure);
            }
            if (result.AuditOnly && result.Failures.Count > 0)
            {
                status = "warning";
            }
        }

        if (failures.Count > 0)
        {
            return await FailAsync(host, failures, reboot, proven: true, ct);
        }

        var jti = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        var expires = now + options.TokenLifetime;
        var token = tokens.Issue(new HealthClaims(jti, host.Id, host.Group, status, policyId, policyVersion, thumbprint,
            Convert.ToHexStringLower(q.PcrDigest), clock.ResetCount, bkPub), now, expires);
        var updated = host with
        {
            State = HostStates.Healthy,
            LastAttestedAt = now,
            LastResetCount = clock.ResetCount,
            LastRestartCount = clock.RestartCount,
            LastClock = clock.Clock,
            LastStatus = status,
        };
        // The host's state, the token, the evidence and their audit records together, or none of them;
        // durable before the host gets its token (on PostgreSQL, in the audit's group commit).
        var records = new List<AuditEntry>(2);
        var recordedAt = time.GetUtcNow();
        if (host.State != HostStates.Healthy || reboot)
        {
            records.Add(new AuditEntry("host.state", host.Id, JsonSerializer.Serialize(new { from = host.State, to = HostStates.Healthy, reboot }), recordedAt));
        }
        records.Add(new AuditEntry("attestation." + status, host.Id,
            JsonSerializer.Serialize(new { jti, reboot, policy = policyId, policyVersion, warnings = warnings.Select(w => w.Id).ToArray() }), recordedAt));
        await store.RecordAttestationAsync(updated, new IssuedTokenRecord(jti, host.Id, now, expires, null),
            new EvidenceRecord(host.Id, now, log, JsonSerializer.Serialize(pcrs), status, quote, quoteSig, nonce), records, ct);
        return new AttestationResult(host.Id, status, warnings, token, expires, reboot);
    }

    /// <summary>
    /// The log's replay against the quoted PCRs (parse, replay, verdict per PCR), shared by every
    /// attestation with the same input: the verdicts — and the policy results over the claims they
    /// give — are a pure function of the log's bytes, the quoted PCR values and the quote's firmware
    /// version, which are its key (SHA-256 of all three). A host sends the same log and values at
    /// every attestation until it reboots, and a fleet booted from one image sends the same ones.
    /// The quote that vouches for the values is verified at every attestation before this is asked.
    /// </summary>
    private LogOutcome ReplayLog(byte[] log, QuotedPcrs quoted)
    {
        var key = LogOutcome.Key(log, quoted);
        if (_logs.TryGetValue(key, out var known))
        {
            return known;
        }
        var outcome = new LogOutcome(EventLogVerifier.Verify(EventLogParser.Parse(log), quoted));
        if (_logs.Count >= MaxKnownLogs)
        {
            _logs.Clear();
        }
        return _logs.GetOrAdd(key, outcome);
    }

    /// <summary>A replayed log and, per policy version, the result of that policy over its claims. Immutable once made but for the results it adds.</summary>
    private sealed class LogOutcome(LogVerification verification)
    {
        private readonly ConcurrentDictionary<(string Id, int Version), PolicyResult> _results = new();

        public LogVerification Verification { get; } = verification;

        /// <summary>
        /// A released policy version never changes, so its result over these claims is computed once.
        /// The claims are made for the evaluation and not kept (they hold lazily built JSON).
        /// </summary>
        public PolicyResult Evaluate(PolicyDocument policy, QuotedPcrs quoted) =>
            _results.GetOrAdd((policy.Id, policy.Version), _ => PolicyEvaluator.Evaluate(policy, PolicyClaims.From(Verification, quoted, null)));

        /// <summary>SHA-256 of the log (length-prefixed), every quoted bank, PCR index and value in order, and the firmware version.</summary>
        public static string Key(byte[] log, QuotedPcrs quoted)
        {
            using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            Span<byte> n = stackalloc byte[8];
            BinaryPrimitives.WriteInt64BigEndian(n, log.Length);
            h.AppendData(n);
            h.AppendData(log);
            foreach (var (bank, pcrs) in quoted.Values.OrderBy(b => b.Key))
            {
                foreach (var (pcr, value) in pcrs.OrderBy(p => p.Key))
                {
                    BinaryPrimitives.WriteUInt16BigEndian(n, (ushort)bank);
                    BinaryPrimitives.WriteUInt16BigEndian(n[2..], (ushort)pcr);
                    BinaryPrimitives.WriteInt32BigEndian(n[4..], value.Length);
                    h.AppendData(n);
                    h.AppendData(value);
                }
            }
            BinaryPrimitives.WriteUInt64BigEndian(n, quoted.Attest.FirmwareVersion);
            h.AppendData(n);
            return Convert.ToHexStringLower(h.GetHashAndReset());
        }
    }

    private static void CheckBindingKey(VerificationKey ak, byte[] bkPub, byte[] bkCert, byte[] bkSig, byte[] nonce, QuotedPcrs quoted,
        Action<string, string> fail, out string thumbprint)
    {
        thumbprint = "";
        TpmtPublic pub;
        TpmtSignature sig;
        try
        {
            pub = TpmtPublic.ParseSized(bkPub);
            sig = TpmtSignature.Parse(bkSig);
        }
        catch (TpmFormatException e)
        {
            fail("binding.format", e.Message);
            return;
        }
        thumbprint = Convert.ToHexStringLower(pub.Name());
        var certify = AttestationVerifier.VerifyCertify(ak, bkCert, sig, nonce, pub);
        foreach (var f in certify.Failures)
        {
            fail("binding." + f.Id, f.Message);
        }
        const TpmaObject required = TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.Decrypt;
        if ((pub.ObjectAttributes & required) != required || pub.Has(TpmaObject.UserWithAuth) || pub.Has(TpmaObject.Restricted) || pub.Has(TpmaObject.Sign))
        {
            fail("binding.attributes", $"the binding key must be a fixedTPM, fixedParent decryption key without userWithAuth (has {pub.ObjectAttributes})");
        }
        if (pub.NameAlg != TpmAlgId.Sha256)
        {
            fail("binding.name-alg", $"the binding key's nameAlg must be SHA-256 (got {pub.NameAlg})");
            return;
        }
        if (!quoted.Values.TryGetValue(TpmAlgId.Sha256, out var sha256) || BindingPcrs.Selections[0].Pcrs.Any(p => !sha256.ContainsKey(p)))
        {
            fail("binding.policy", "the quote does not cover the sha256 PCRs a binding key's policy needs");
            return;
        }
        var expected = new PolicyDigest(TpmAlgId.Sha256)
            .PolicyPcr(BindingPcrs, PcrComposite.Digest(TpmAlgId.Sha256, BindingPcrs, (b, p) => sha256[p])).Digest;
        if (!CryptographicOperations.FixedTimeEquals(expected, pub.AuthPolicy))
        {
            fail("binding.policy", $"the binding key's policy {Convert.ToHexStringLower(pub.AuthPolicy)} is not PolicyPCR over the quoted sha256 PCRs 0-7 ({Convert.ToHexStringLower(expected)})");
        }
    }

    /// <summary>
    /// A contraindicated result. When the evidence is proven to come from the host's TPM (its AK
    /// signed the quote), the host becomes failed and its tokens are revoked at once; otherwise
    /// the request is refused and audited without letting a stranger change the host's state.
    /// </summary>
    private async Task<AttestationResult> FailAsync(HostRecord host, List<AttestationFailure> failures, bool reboot, bool proven, CancellationToken ct)
    {
        if (proven)
        {
            await MarkAsync(host, HostStates.Failed, failures[0].Id, ct);
        }
        await audit.WriteAsync("attestation.contraindicated", host.Id, new { failures = failures.Select(f => f.Id).ToArray(), reboot }, ct);
        return new AttestationResult(host.Id, "contraindicated", failures, null, null, reboot);
    }

    private async Task MarkAsync(HostRecord host, string state, string reason, CancellationToken ct)
    {
        var now = time.GetUtcNow();
        int revoked = await store.RevokeHostTokensAsync(host.Id, now, ct);
        if (host.State != state)
        {
            await store.UpdateHostAsync(host with { State = state, LastStatus = reason }, ct);
            await audit.WriteAsync("host.state", host.Id, new { from = host.State, to = state, reason, revokedTokens = revoked }, ct);
        }
    }

    private static AttestationResult Refused(string hostId, string id, string message) =>
        new(hostId, "contraindicated", [new AttestationFailure(id, message)], null, null, false);

    private static Dictionary<TpmAlgId, Dictionary<int, byte[]>> ParsePcrs(Dictionary<string, Dictionary<string, string>> pcrs)
    {
        var result = new Dictionary<TpmAlgId, Dictionary<int, byte[]>>();
        foreach (var (bank, values) in pcrs)
        {
            if (!TpmHash.TryParse(bank, out var alg))
            {
                throw new FormatException($"unknown PCR bank '{bank}'");
            }
            var map = new Dictionary<int, byte[]>();
            foreach (var (index, hex) in values)
            {
                if (!int.TryParse(index, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int i) || i > 23)
                {
                    throw new FormatException($"'{index}' is not a PCR index");
                }
                map[i] = Convert.FromHexString(hex);
            }
            result[alg] = map;
        }
        return result;
    }
}

using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Rempart.Attestation.Protocol;
using Rempart.Guardian.Storage;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;

namespace Rempart.Guardian.Enrolment;

/// <summary>An enrolment refusal with a stable identifier (e.g. <c>enrol.ek.untrusted-ca</c>).</summary>
public sealed class EnrolmentException(string id, string message) : Exception(message)
{
    public string Id { get; } = id;
}

/// <summary>
/// Enrolment (DESIGN.md §3.1): the EK certificate chains to a trusted TPM CA and certifies the
/// EK presented; the AK has the attributes of a TPM-resident restricted signing key; and
/// MakeCredential / ActivateCredential proves the AK lives in the TPM that holds the EK. The
/// host then waits as pending until an admin (or a group's rule) approves it.
/// </summary>
public sealed class EnrolmentService(IGuardianStore store, GuardianOptions options, TimeProvider time, Audit audit)
{
    private const TpmaObject RequiredAk = TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.SensitiveDataOrigin | TpmaObject.Restricted | TpmaObject.Sign;

    public async Task<EnrolmentChallenge> StartAsync(EnrolmentRequest request, CancellationToken ct)
    {
        if (string.IsNullOrWhiteSpace(request.Hostname) || request.Hostname.Length > 253)
        {
            throw new EnrolmentException("enrol.hostname", "hostname must be 1 to 253 characters");
        }
        var ekBytes = Base64(request.EkPublic, "ekPublic");
        var akBytes = Base64(request.AkPublic, "akPublic");
        var ek = ParsePublic(ekBytes, "enrol.ek.format", "ekPublic");
        var ak = ParsePublic(akBytes, "enrol.ak.format", "akPublic");
        byte[]? certDer = request.EkCertificate is null ? null : Base64(request.EkCertificate, "ekCertificate");

        if (!ek.Has(TpmaObject.Restricted | TpmaObject.Decrypt | TpmaObject.FixedTpm | TpmaObject.FixedParent))
        {
            throw new EnrolmentException("enrol.ek.attributes", "the EK must be a fixedTPM, fixedParent, restricted decryption key");
        }
        if (certDer is null)
        {
            await CheckEkAllowedAsync(ek, ct);
        }
        else
        {
            CheckEkCertificate(ek, certDer);
        }
        if ((ak.ObjectAttributes & RequiredAk) != RequiredAk || ak.Has(TpmaObject.Decrypt))
        {
            throw new EnrolmentException("enrol.ak.attributes",
                $"the AK must have fixedTPM, fixedParent, sensitiveDataOrigin, restricted and sign, and not decrypt (has {ak.ObjectAttributes})");
        }
        if (ak.NameAlg != TpmAlgId.Sha256)
        {
            throw new EnrolmentException("enrol.ak.name-alg", $"the AK's nameAlg must be SHA-256 (got {ak.NameAlg})");
        }
        try
        {
            // An AK whose quotes we could not verify later is refused now (unsupported curve, bad modulus size).
            using var probe = new VerificationKey(ak);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or CryptographicException or InvalidCastException)
        {
            throw new EnrolmentException("enrol.ak.unsupported", "the AK cannot be used to verify quotes: " + e.Message);
        }
        if (ek.Type is not (TpmAlgId.Rsa or TpmAlgId.Ecc))
        {
            throw new EnrolmentException("enrol.ek.type", $"the EK must be an RSA or ECC key (got {ek.Type})");
        }
        var akName = ak.Name();
        if (await store.GetHostByAkNameAsync(Convert.ToHexStringLower(akName), ct) is { State: not HostStates.Removed } existing)
        {
            throw new EnrolmentException("enrol.ak.already-enrolled", $"this AK is already enrolled as host {existing.Id}");
        }

        var secret = RandomNumberGenerator.GetBytes(32);
        try
        {
            Tpm2bIdObject blob;
            Tpm2bEncryptedSecret encSecret;
            try
            {
                (blob, encSecret) = Credential.Make(ek, secret, akName);
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException or CryptographicException or InvalidCastException)
            {
                throw new EnrolmentException("enrol.ek.parameters", "no credential can be made for this EK: " + e.Message);
            }
            var id = "enr-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
            var expires = time.GetUtcNow() + options.ChallengeLifetime;
            await store.InsertChallengeAsync(new EnrolmentChallengeRecord(id, request.Hostname, ekBytes, certDer, akBytes, SHA256.HashData(secret), expires), ct);
            return new EnrolmentChallenge(id, Convert.ToBase64String(blob.Credential), Convert.ToBase64String(encSecret.Secret), expires);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
        }
    }

    public async Task<EnrolmentResult> ActivateAsync(string enrolmentId, EnrolmentActivation activation, CancellationToken ct)
    {
        var now = time.GetUtcNow();
        var challenge = await store.TakeChallengeAsync(enrolmentId, now, ct)
            ?? throw new EnrolmentException("enrol.challenge.unknown", "no such enrolment challenge, or it expired or was already answered: start again");
        var answer = Base64(activation.Secret, "secret");
        var hash = SHA256.HashData(answer);
        CryptographicOperations.ZeroMemory(answer);
        if (!CryptographicOperations.FixedTimeEquals(hash, challenge.SecretHash))
        {
            await audit.WriteAsync("enrolment.refused", enrolmentId, new { reason = "enrol.credential.mismatch", challenge.Hostname }, ct);
            throw new EnrolmentException("enrol.credential.mismatch", "the activated credential is wrong: the AK is not in the TPM that holds this EK");
        }
        var ak = TpmtPublic.ParseSized(challenge.AkPublic);
        var akName = Convert.ToHexStringLower(ak.Name());
        string hostId = "host-" + akName[4..28];
        string state = HostStates.Pending;
        string? group = null;
        if (challenge.EkCertificate is { } der)
        {
            using var cert = X509CertificateLoader.LoadCertificate(der);
            foreach (var g in await store.ListGroupsAsync(ct))
            {
                if (g.ApproveEkIssuer is { Length: > 0 } issuer && string.Equals(cert.Issuer, issuer, StringComparison.Ordinal))
                {
                    state = HostStates.Approved;
                    group = g.Name;
                    break;
                }
            }
        }
        var host = new HostRecord(hostId, challenge.Hostname, challenge.EkPublic, challenge.EkCertificate, challenge.AkPublic, akName,
            state, group, now, null, null, null, null, null);
        if (await store.GetHostAsync(hostId, ct) is { State: HostStates.Removed })
        {
            // A removed host that enrols again starts over as a new enrolment (same TPM, same id).
            await store.UpdateHostAsync(host, ct);
        }
        else
        {
            await store.InsertHostAsync(host, ct);
        }
        await audit.WriteAsync("host.enrolled", hostId, new { challenge.Hostname, akName, state, group, ekCertified = challenge.EkCertificate is not null }, ct);
        return new EnrolmentResult(hostId, state, group);
    }

    /// <summary>A TPM without EK certificate is accepted only when an admin allowed this exact EK.</summary>
    private async Task CheckEkAllowedAsync(TpmtPublic ek, CancellationToken ct)
    {
        var name = Convert.ToHexStringLower(ek.Name());
        var allowed = await store.GetEkAllowAsync(name, ct);
        if (allowed is null || !CryptographicOperations.FixedTimeEquals(TpmtPublic.ParseSized(allowed.EkPublic).Name(), ek.Name()))
        {
            throw new EnrolmentException("enrol.ek.no-certificate",
                $"the TPM presented no EK certificate and its EK (name {name}) is not allowed: an admin can allow it with 'rempart host allow-ek --ek-public FILE'");
        }
    }

    private void CheckEkCertificate(TpmtPublic ek, byte[] der)
    {
        X509Certificate2 cert;
        try
        {
            cert = X509CertificateLoader.LoadCertificate(der);
        }
        catch (CryptographicException e)
        {
            throw new EnrolmentException("enrol.ek.certificate-format", "the EK certificate is not DER X.509: " + e.Message);
        }
        using (cert)
        {
            if (!cert.PublicKey.ExportSubjectPublicKeyInfo().AsSpan().SequenceEqual(KeyConversion.ToSubjectPublicKeyInfo(ek)))
            {
                throw new EnrolmentException("enrol.ek.certificate-mismatch", "the EK certificate does not certify the EK presented");
            }
            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            // EK certificates carry TCG-specific critical extensions (e.g. SAN with TPM attributes) .NET does not know.
            chain.ChainPolicy.VerificationFlags = X509VerificationFlags.IgnoreInvalidPolicy;
            foreach (var ca in TrustedCas.Load(options.TrustedEkCaDir))
            {
                if (ca.SubjectName.RawData.AsSpan().SequenceEqual(ca.IssuerName.RawData))
                {
                    chain.ChainPolicy.CustomTrustStore.Add(ca);
                }
                else
                {
                    chain.ChainPolicy.ExtraStore.Add(ca);
                }
            }
            if (!chain.Build(cert))
            {
                var status = string.Join(", ", chain.ChainStatus.Select(s => s.Status.ToString()).Distinct());
                throw new EnrolmentException("enrol.ek.untrusted-ca", $"the EK certificate (issuer {cert.Issuer}) does not chain to a trusted TPM CA: {status}");
            }
        }
    }

    private static TpmtPublic ParsePublic(byte[] bytes, string id, string field)
    {
        try
        {
            return TpmtPublic.ParseSized(bytes);
        }
        catch (TpmFormatException e)
        {
            throw new EnrolmentException(id, $"{field} is not a TPM2B_PUBLIC: {e.Message}");
        }
    }

    internal static byte[] Base64(string value, string field)
    {
        try
        {
            return Convert.FromBase64String(value);
        }
        catch (FormatException)
        {
            throw new EnrolmentException("request.base64", $"{field} is not base64");
        }
    }
}

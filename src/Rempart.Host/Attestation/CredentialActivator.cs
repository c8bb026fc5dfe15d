using System.Security.Cryptography;
using Rempart.Attestation.Protocol;
using Rempart.Tpm;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Templates;

namespace Rempart.Host.Attestation;

/// <summary>
/// Answers the Guardian's enrolment challenge (DESIGN §3.1) with TPM2_ActivateCredential
/// (Part 3, §12.5): the TPM releases the credential only if it holds the EK private key the
/// seed was encrypted to and a loaded object with the Name the credential was made for, the AK.
/// </summary>
public sealed class CredentialActivator
{
    private readonly TpmClient _tpm;

    /// <param name="tpm">The host TPM.</param>
    /// <param name="ekKind">The EK the enrolment request presented: "rsa" (default) or "ecc".</param>
    /// <param name="akKind">The AK the enrolment request presented: "rsa" (default) or "ecc".</param>
    public CredentialActivator(TpmClient tpm, string ekKind = "rsa", string akKind = "rsa")
    {
        _ = KeyTemplates.Ek(ekKind);
        _ = KeyTemplates.Ak(akKind);
        _tpm = tpm;
        EkKind = ekKind;
        AkKind = akKind;
    }

    public string EkKind { get; }

    public string AkKind { get; }

    /// <summary>
    /// Re-creates EK and AK, satisfies the EK's default policy with a PolicySecret(TPM_RH_ENDORSEMENT)
    /// session, activates the credential and returns it base64-encoded; the recovered secret is
    /// wiped once encoded. Unless the client already has one, a session salted with the EK
    /// encrypts the blob and the recovered secret on the TPM bus. Every object and session is
    /// flushed, on failure too. A challenge made for another AK or EK fails with a
    /// <see cref="TpmException"/> (TPM_RC_INTEGRITY, or a failed secret decryption).
    /// </summary>
    /// <exception cref="FormatException">The challenge's blob or secret is not base64 of an acceptable size.</exception>
    public EnrolmentActivation Answer(EnrolmentChallenge challenge)
    {
        ArgumentNullException.ThrowIfNull(challenge);
        var blob = new Tpm2bIdObject(Decode(challenge.CredentialBlob, "credentialBlob", Tpm2bIdObject.MaxSize));
        var encryptedSecret = new Tpm2bEncryptedSecret(Decode(challenge.EncryptedSecret, "encryptedSecret", Tpm2bEncryptedSecret.MaxSize));
        return Transients.Run(_tpm, t =>
        {
            var ek = _tpm.CreateEk(EkKind);
            t.Track(ek.Handle!);
            if (_tpm.EncryptionSession is null)
            {
                t.Track(_tpm.EnableParameterEncryption(ek.Handle!, ek.Public));
            }
            var ak = _tpm.CreateAk(AkKind);
            t.Track(ak.Handle!);
            var ekPolicy = t.Track(_tpm.StartEkPolicySession());
            var secret = _tpm.ActivateCredential(ak.Handle!, ek.Handle!, blob, encryptedSecret, keyAuth: ekPolicy);
            try
            {
                return new EnrolmentActivation(Convert.ToBase64String(secret));
            }
            finally
            {
                CryptographicOperations.ZeroMemory(secret);
            }
        });
    }

    private static byte[] Decode(string base64, string field, int maxSize)
    {
        byte[] bytes;
        try
        {
            bytes = Convert.FromBase64String(base64 ?? "");
        }
        catch (FormatException)
        {
            throw new FormatException($"enrolment challenge: {field} is not base64");
        }
        if (bytes.Length == 0 || bytes.Length > maxSize)
        {
            throw new FormatException($"enrolment challenge: {field} of 1 to {maxSize} bytes expected (got {bytes.Length})");
        }
        return bytes;
    }
}

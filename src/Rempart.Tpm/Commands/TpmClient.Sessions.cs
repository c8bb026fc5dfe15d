using System.Security.Cryptography;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Sessions;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm;

/// <summary>Part 3, §11 (Session Commands), §23 (Enhanced Authorization (EA) Commands).</summary>
public sealed partial class TpmClient
{
    /// <summary>
    /// TPM2_StartAuthSession (Part 3, §11.1). When <paramref name="saltKey"/> is given (a
    /// loaded EK or SRK and its public area), a random salt is encrypted to it (Part 1,
    /// Annex B.10.2 for RSA-OAEP with label "SECRET", Annex C.6.1 for ECDH), so the session
    /// key is known only to us and that TPM: this is what makes parameter encryption and
    /// HMACs worth anything on an untrusted bus.
    /// </summary>
    public AuthSession StartAuthSession(TpmSe type, TpmAlgId hashAlg = TpmAlgId.Sha256, (TpmHandle Handle, TpmtPublic Public)? saltKey = null,
        TpmtSymDef? symmetric = null, TpmaSession attributes = TpmaSession.None)
    {
        int digest = TpmHash.DigestSize(hashAlg);
        var nonceCaller = RandomNumberGenerator.GetBytes(digest);
        byte[] salt = [];
        byte[] encryptedSalt = [];
        if (saltKey is { } sk)
        {
            (salt, encryptedSalt) = SecretSharing.Encrypt(sk.Public, "SECRET", digest);
        }
        var sym = symmetric ?? TpmtSymDef.Null;
        var w = new TpmWriter();
        w.WriteSized(nonceCaller).WriteSized(encryptedSalt).WriteByte((byte)type);
        sym.Write(w);
        w.WriteUInt16((ushort)hashAlg);
        var tpmKey = saltKey?.Handle ?? TpmHandle.Null;
        var r = Execute(TpmCc.StartAuthSession, [tpmKey, TpmHandle.Null], 0, null, w.ToArray(), 1, out var handles);
        var nonceTpm = r.ReadSized("TPM2B_NONCE nonceTPM", TpmConstants.MaxDigestSize);
        r.ExpectEnd("StartAuthSession response");
        if (nonceTpm.Length != digest)
        {
            throw new TpmFormatException(r.Offset, $"nonceTPM of {digest} bytes (got {nonceTpm.Length})");
        }
        byte[] sessionKey = [];
        if (salt.Length > 0)
        {
            // Part 1, §19.6.8: sessionKey = KDFa(hash, bind.authValue || salt, "ATH", nonceTPM, nonceCaller, bits).
            sessionKey = Kdf.KdfA(hashAlg, salt, "ATH", nonceTpm, nonceCaller, digest * 8);
            CryptographicOperations.ZeroMemory(salt);
        }
        return new AuthSession(handles[0], type, hashAlg, sym, sessionKey, nonceCaller, nonceTpm, attributes);
    }

    /// <summary>
    /// Starts a salted HMAC session (AES-128-CFB, SHA-256) and makes <see cref="Execute"/>
    /// use it for parameter encryption on every command that allows it. The salt key is the
    /// TPM's own key (EK or SRK) whose public area the caller has verified.
    /// </summary>
    public AuthSession EnableParameterEncryption(TpmHandle saltKey, TpmtPublic saltPublic)
    {
        if (EncryptionSession is not null)
        {
            FlushSession(EncryptionSession);
        }
        EncryptionSession = StartAuthSession(TpmSe.Hmac, TpmAlgId.Sha256, (saltKey, saltPublic), TpmtSymDef.Aes128Cfb,
            TpmaSession.Decrypt | TpmaSession.Encrypt);
        return EncryptionSession;
    }

    /// <summary>TPM2_PolicyPCR (Part 3, §23.7). An empty digest means "the current values".</summary>
    public void PolicyPcr(AuthSession session, byte[] pcrDigest, TpmlPcrSelection pcrs)
    {
        var w = new TpmWriter();
        w.WriteSized(pcrDigest);
        pcrs.Write(w);
        Execute(TpmCc.PolicyPcr, [new TpmHandle(session.Handle)], 0, null, w.ToArray(), 0, out _);
    }

    /// <summary>
    /// TPM2_PolicySecret (Part 3, §23.4): asserts knowledge of <paramref name="authObject"/>'s
    /// authValue (e.g. the endorsement hierarchy, for the TCG default EK policy).
    /// </summary>
    public void PolicySecret(TpmHandle authObject, AuthSession session, TpmSession? auth = null, byte[]? policyRef = null, int expiration = 0)
    {
        var w = new TpmWriter();
        w.WriteSized(session.NonceTpm).WriteSized([]).WriteSized(policyRef ?? []).WriteUInt32((uint)expiration);
        var r = Execute(TpmCc.PolicySecret, [authObject, new TpmHandle(session.Handle)], 1, [auth], w.ToArray(), 0, out _,
            commandParamEncryptable: true, responseParamEncryptable: true);
        r.ReadSized("TPM2B_TIMEOUT", 8);
        TpmtTicket.Read(ref r, TpmSt.AuthSecret);
        r.ExpectEnd("PolicySecret response");
    }

    /// <summary>TPM2_PolicyAuthValue (Part 3, §23.17): the object's authValue will key the session HMAC.</summary>
    public void PolicyAuthValue(AuthSession session)
    {
        Execute(TpmCc.PolicyAuthValue, [new TpmHandle(session.Handle)], 0, null, [], 0, out _);
        session.IncludeAuthValue = true;
    }

    /// <summary>TPM2_PolicyPassword (Part 3, §23.18): the object's authValue will be sent as a password.</summary>
    public void PolicyPassword(AuthSession session)
    {
        Execute(TpmCc.PolicyPassword, [new TpmHandle(session.Handle)], 0, null, [], 0, out _);
        session.SendPassword = true;
    }

    /// <summary>TPM2_PolicyCommandCode (Part 3, §23.11).</summary>
    public void PolicyCommandCode(AuthSession session, TpmCc code)
    {
        var w = new TpmWriter().WriteUInt32((uint)code);
        Execute(TpmCc.PolicyCommandCode, [new TpmHandle(session.Handle)], 0, null, w.ToArray(), 0, out _);
    }

    /// <summary>TPM2_PolicyGetDigest (Part 3, §23.19).</summary>
    public byte[] PolicyGetDigest(AuthSession session)
    {
        var r = Execute(TpmCc.PolicyGetDigest, [new TpmHandle(session.Handle)], 0, null, [], 0, out _, responseParamEncryptable: true);
        var d = r.ReadSized("TPM2B_DIGEST policyDigest", TpmConstants.MaxDigestSize);
        r.ExpectEnd("PolicyGetDigest response");
        return d;
    }

    /// <summary>TPM2_PolicyRestart (Part 3, §23.20).</summary>
    public void PolicyRestart(AuthSession session)
    {
        Execute(TpmCc.PolicyRestart, [new TpmHandle(session.Handle)], 0, null, [], 0, out _);
        session.ResetPolicyFlags();
    }
}

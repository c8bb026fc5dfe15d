using System.Security.Cryptography;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm.Sessions;

/// <summary>
/// An HMAC, policy or trial session started with TPM2_StartAuthSession (Part 3, §11.1).
/// Computes command HMACs and checks response HMACs (Part 1, §19.6), rolls the nonces, and
/// when salted with a TPM key does parameter encryption with AES-CFB (Part 1, §21.4) so
/// secrets never cross the TPM bus in clear. The session key is wiped by <see cref="Forget"/>.
/// </summary>
public sealed class AuthSession : TpmSession
{
    private byte[] _sessionKey;
    private byte[] _nonceTpm;
    private byte[] _nonceCaller;

    internal AuthSession(uint handle, TpmSe type, TpmAlgId hashAlg, TpmtSymDef symmetric, byte[] sessionKey, byte[] nonceCaller, byte[] nonceTpm, TpmaSession attributes)
    {
        Handle = handle;
        Type = type;
        HashAlg = hashAlg;
        Symmetric = symmetric;
        _sessionKey = sessionKey;
        _nonceCaller = nonceCaller;
        _nonceTpm = nonceTpm;
        Attributes = attributes | TpmaSession.ContinueSession;
    }

    public override uint Handle { get; }

    public TpmSe Type { get; }

    public TpmAlgId HashAlg { get; }

    public TpmtSymDef Symmetric { get; }

    /// <summary>Session attributes sent with each command (continueSession is always set).</summary>
    public TpmaSession Attributes { get; set; }

    /// <summary>Whether a salt or bind made this session's key secret: required for parameter encryption to mean anything.</summary>
    public bool HasSessionKey => _sessionKey.Length > 0;

    /// <summary>Policy sessions: TPM2_PolicyAuthValue was asserted, so the entity's authValue keys the HMAC.</summary>
    public bool IncludeAuthValue { get; set; }

    /// <summary>Policy sessions: TPM2_PolicyPassword was asserted, so the authValue is sent in clear.</summary>
    public bool SendPassword { get; set; }

    public override bool DecryptsCommand => (Attributes & TpmaSession.Decrypt) != 0;

    public override bool EncryptsResponse => (Attributes & TpmaSession.Encrypt) != 0;

    internal byte[] NonceTpm => _nonceTpm;

    private bool UsesAuthValue => Type == TpmSe.Hmac || IncludeAuthValue;

    private byte[] HmacKey(byte[] entityAuth) => UsesAuthValue ? [.. _sessionKey, .. entityAuth] : [.. _sessionKey];

    internal override void BeginCommand() => _nonceCaller = RandomNumberGenerator.GetBytes(TpmHash.DigestSize(HashAlg));

    internal override AuthCommand Authorize(CommandContext ctx, byte[] entityAuth, int sessionIndex)
    {
        if (Type == TpmSe.Trial)
        {
            throw new TpmSessionException("a trial session cannot authorise a command");
        }
        if (Type == TpmSe.Policy && SendPassword)
        {
            return new AuthCommand(Handle, _nonceCaller, Attributes, entityAuth);
        }
        var key = HmacKey(entityAuth);
        try
        {
            byte[] data = [.. ctx.CpHash(HashAlg), .. _nonceCaller, .. _nonceTpm,
                .. (sessionIndex == 0 ? ctx.DecryptNonce : []), .. (sessionIndex == 0 ? ctx.EncryptNonce : []), (byte)Attributes];
            return new AuthCommand(Handle, _nonceCaller, Attributes, TpmHash.Hmac(HashAlg, key, data));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    internal override void CheckResponse(ResponseContext ctx, AuthResponse auth, byte[] entityAuth)
    {
        int size = TpmHash.DigestSize(HashAlg);
        if (auth.Nonce.Length != size)
        {
            throw new TpmSessionException($"session 0x{Handle:x8}: response nonce of {auth.Nonce.Length} bytes, expected {size}");
        }
        _nonceTpm = auth.Nonce;
        if (Type == TpmSe.Policy && SendPassword)
        {
            if (auth.Hmac.Length != 0)
            {
                throw new TpmSessionException($"session 0x{Handle:x8}: password policy session answered with an HMAC");
            }
            return;
        }
        var key = HmacKey(entityAuth);
        try
        {
            byte[] data = [.. ctx.RpHash(HashAlg), .. _nonceTpm, .. _nonceCaller, (byte)auth.Attributes];
            var expected = TpmHash.Hmac(HashAlg, key, data);
            if (!CryptographicOperations.FixedTimeEquals(expected, auth.Hmac))
            {
                throw new TpmSessionException($"session 0x{Handle:x8}: the TPM's response HMAC does not verify (response altered or wrong authValue)");
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    internal override void EncryptCommandParameter(Span<byte> data, byte[] entityAuth) =>
        CfbTransform(data, entityAuth, _nonceCaller, _nonceTpm, encrypt: true);

    internal override void DecryptResponseParameter(Span<byte> data, byte[] entityAuth) =>
        CfbTransform(data, entityAuth, _nonceTpm, _nonceCaller, encrypt: false);

    /// <summary>Part 1, §21.4: KDFa(sessionAlg, sessionKey || authValue, "CFB", nonceNewer, nonceOlder, keyBits + blockBits).</summary>
    private void CfbTransform(Span<byte> data, byte[] entityAuth, byte[] nonceNewer, byte[] nonceOlder, bool encrypt)
    {
        if (Symmetric.Algorithm != TpmAlgId.Aes || Symmetric.Mode != TpmAlgId.Cfb)
        {
            throw new TpmSessionException("parameter encryption needs a session with symmetric AES-CFB");
        }
        int keyBytes = Symmetric.KeyBits / 8;
        var hmacKey = HmacKey(entityAuth);
        var material = Kdf.KdfA(HashAlg, hmacKey, "CFB", nonceNewer, nonceOlder, Symmetric.KeyBits + 128);
        try
        {
            if (encrypt)
            {
                AesCfb.Encrypt(material.AsSpan(0, keyBytes), material.AsSpan(keyBytes, 16), data);
            }
            else
            {
                AesCfb.Decrypt(material.AsSpan(0, keyBytes), material.AsSpan(keyBytes, 16), data);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(material);
            CryptographicOperations.ZeroMemory(hmacKey);
        }
    }

    /// <summary>Called after TPM2_PolicyRestart: the nonces carry on, the assertions do not.</summary>
    public void ResetPolicyFlags()
    {
        IncludeAuthValue = false;
        SendPassword = false;
    }

    public override void Forget()
    {
        CryptographicOperations.ZeroMemory(_sessionKey);
        _sessionKey = [];
    }
}

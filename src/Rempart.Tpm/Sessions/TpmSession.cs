namespace Rempart.Tpm.Sessions;

/// <summary>
/// An authorisation session as it appears in a command's authorisation area (Part 1, §19;
/// Part 2, §10.13.2 TPMS_AUTH_COMMAND / §10.13.3 TPMS_AUTH_RESPONSE).
/// </summary>
public abstract class TpmSession
{
    /// <summary>The session handle in the authorisation area (TPM_RS_PW for passwords).</summary>
    public abstract uint Handle { get; }

    /// <summary>Whether this session encrypts the first command parameter (TPMA_SESSION.decrypt).</summary>
    public virtual bool DecryptsCommand => false;

    /// <summary>Whether this session encrypts the first response parameter (TPMA_SESSION.encrypt).</summary>
    public virtual bool EncryptsResponse => false;

    /// <summary>Starts a new command: rolls the caller nonce (before parameter encryption, which uses it).</summary>
    internal virtual void BeginCommand()
    {
    }

    /// <summary>Encrypts the first command parameter's data in place (only when <see cref="DecryptsCommand"/>).</summary>
    internal virtual void EncryptCommandParameter(Span<byte> data, byte[] entityAuth)
    {
    }

    /// <summary>Decrypts the first response parameter's data in place (only when <see cref="EncryptsResponse"/>).</summary>
    internal virtual void DecryptResponseParameter(Span<byte> data, byte[] entityAuth)
    {
    }

    /// <summary>Produces this session's TPMS_AUTH_COMMAND given the command's cpHash inputs.</summary>
    internal abstract AuthCommand Authorize(CommandContext ctx, byte[] entityAuth, int sessionIndex);

    /// <summary>Checks the TPM's TPMS_AUTH_RESPONSE and updates nonces; throws on a bad HMAC.</summary>
    internal abstract void CheckResponse(ResponseContext ctx, AuthResponse auth, byte[] entityAuth);

    /// <summary>Forgets session secrets once the session has been flushed or closed.</summary>
    public virtual void Forget()
    {
    }
}

/// <summary>TPMS_AUTH_COMMAND.</summary>
internal readonly record struct AuthCommand(uint Handle, byte[] Nonce, TpmaSession Attributes, byte[] Hmac);

/// <summary>TPMS_AUTH_RESPONSE.</summary>
internal readonly record struct AuthResponse(byte[] Nonce, TpmaSession Attributes, byte[] Hmac);

/// <summary>What an HMAC over a command covers (Part 1, §19.6.5: cpHash inputs), plus the nonces of the other sessions.</summary>
internal sealed class CommandContext
{
    public required TpmCc Command { get; init; }

    public required IReadOnlyList<byte[]> Names { get; init; }

    /// <summary>The parameter area as sent (after parameter encryption).</summary>
    public required byte[] Parameters { get; init; }

    public byte[] DecryptNonce { get; set; } = [];

    public byte[] EncryptNonce { get; set; } = [];

    public byte[] CpHash(TpmAlgId alg)
    {
        var w = new Marshal.TpmWriter(Parameters.Length + 64);
        w.WriteUInt32((uint)Command);
        foreach (var n in Names)
        {
            w.WriteBytes(n);
        }
        w.WriteBytes(Parameters);
        return TpmHash.Hash(alg, w.Written);
    }
}

/// <summary>What an HMAC over a response covers (Part 1, §19.6.9: rpHash inputs).</summary>
internal sealed class ResponseContext
{
    public required TpmCc Command { get; init; }

    /// <summary>The response parameter area as received (before parameter decryption).</summary>
    public required byte[] Parameters { get; init; }

    public byte[] RpHash(TpmAlgId alg)
    {
        var w = new Marshal.TpmWriter(Parameters.Length + 16);
        w.WriteUInt32(TpmRc.Success).WriteUInt32((uint)Command).WriteBytes(Parameters);
        return TpmHash.Hash(alg, w.Written);
    }
}

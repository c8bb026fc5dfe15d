namespace Rempart.Tpm.Sessions;

/// <summary>
/// The password authorisation (Part 1, §19.8.4): handle TPM_RS_PW, empty nonce, the
/// entity's authValue in clear in the hmac field. Use an HMAC or salted session instead
/// whenever the authValue matters and the bus is not trusted.
/// </summary>
public sealed class PasswordSession : TpmSession
{
    public const uint RsPw = 0x40000009;

    public static PasswordSession Instance { get; } = new();

    public override uint Handle => RsPw;

    internal override AuthCommand Authorize(CommandContext ctx, byte[] entityAuth, int sessionIndex) =>
        new(RsPw, [], TpmaSession.ContinueSession, entityAuth);

    internal override void CheckResponse(ResponseContext ctx, AuthResponse auth, byte[] entityAuth)
    {
        if (auth.Nonce.Length != 0 || auth.Hmac.Length != 0)
        {
            throw new TpmSessionException("password session response carries a nonce or HMAC");
        }
    }
}

/// <summary>A session-level failure: a response HMAC that does not verify, or a misuse of a session.</summary>
public sealed class TpmSessionException : Exception
{
    public TpmSessionException(string message) : base(message)
    {
    }
}

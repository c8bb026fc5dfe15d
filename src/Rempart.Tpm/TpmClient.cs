using Rempart.Tpm.Marshal;
using Rempart.Tpm.Sessions;
using Rempart.Tpm.Transport;

namespace Rempart.Tpm;

/// <summary>
/// A TPM 2.0 client over one transport. Each command is a method in a partial file named
/// after its chapter of TPM 2.0 Library Part 3, with its spec section in its doc comment;
/// all of them go through <see cref="Execute"/>, which marshals the command (Part 3, §5),
/// runs the sessions and parses the response. Responses are untrusted input: every
/// malformation becomes a <see cref="TpmFormatException"/>, every error code a
/// <see cref="TpmException"/>.
/// </summary>
public sealed partial class TpmClient : IDisposable
{
    private readonly ITpmTransport _transport;
    private readonly bool _ownsTransport;

    public TpmClient(ITpmTransport transport, bool ownsTransport = true)
    {
        _transport = transport;
        _ownsTransport = ownsTransport;
    }

    public string Address => _transport.Address;

    /// <summary>
    /// A salted session with decrypt/encrypt attributes that <see cref="Execute"/> adds to
    /// every command whose first parameter (in or out) is a sized buffer and that no other
    /// session already encrypts. Set it with <see cref="EnableParameterEncryption"/>.
    /// </summary>
    public AuthSession? EncryptionSession { get; private set; }

    /// <summary>Opens a client on a TPM address (see <see cref="TpmAddress"/>).</summary>
    public static TpmClient Open(string address) => new(TpmAddress.Parse(address).Open());

    /// <summary>
    /// Execute one command. <paramref name="handles"/>' first <paramref name="authHandles"/>
    /// entries need authorisation, by the matching entries of <paramref name="auths"/>
    /// (password by default).
    /// </summary>
    internal TpmReader Execute(
        TpmCc cc,
        ReadOnlySpan<TpmHandle> handles,
        int authHandles,
        TpmSession?[]? auths,
        byte[] parameters,
        int responseHandleCount,
        out uint[] responseHandles,
        bool commandParamEncryptable = false,
        bool responseParamEncryptable = false)
    {
        var sessions = new List<(TpmSession Session, byte[] Auth)>();
        for (int i = 0; i < authHandles; i++)
        {
            var s = auths is not null && i < auths.Length ? auths[i] : null;
            sessions.Add((s ?? PasswordSession.Instance, handles[i].Auth));
        }
        bool wantEnc = EncryptionSession is not null && (commandParamEncryptable || responseParamEncryptable);
        if (wantEnc && !sessions.Any(s => ReferenceEquals(s.Session, EncryptionSession)))
        {
            sessions.Add((EncryptionSession!, []));
        }

        int decIdx = -1, encIdx = -1;
        for (int i = 0; i < sessions.Count; i++)
        {
            var s = sessions[i].Session;
            if (s.DecryptsCommand && commandParamEncryptable && decIdx < 0)
            {
                decIdx = i;
            }
            if (s.EncryptsResponse && responseParamEncryptable && encIdx < 0)
            {
                encIdx = i;
            }
        }

        // A session may carry decrypt/encrypt only where the command allows it (Part 1, §21.2):
        // strip those attributes for this command otherwise, and restore them afterwards.
        var restore = new List<(AuthSession S, TpmaSession A)>();
        for (int i = 0; i < sessions.Count; i++)
        {
            if (sessions[i].Session is AuthSession a)
            {
                var attrs = a.Attributes;
                var want = attrs;
                if (i != decIdx)
                {
                    want &= ~TpmaSession.Decrypt;
                }
                if (i != encIdx)
                {
                    want &= ~TpmaSession.Encrypt;
                }
                if (want != attrs)
                {
                    restore.Add((a, attrs));
                    a.Attributes = want;
                }
            }
        }

        try
        {
            foreach (var (session, _) in sessions)
            {
                session.BeginCommand();
            }
            var cpBuffer = (byte[])parameters.Clone();
            if (decIdx >= 0)
            {
                var enc = FirstSizedParameter(cpBuffer, "command parameter");
                sessions[decIdx].Session.EncryptCommandParameter(enc, sessions[decIdx].Auth);
            }

            var w = new TpmWriter(64 + cpBuffer.Length);
            w.WriteUInt16((ushort)(sessions.Count > 0 ? TpmSt.Sessions : TpmSt.NoSessions)).WriteUInt32(0).WriteUInt32((uint)cc);
            foreach (var h in handles)
            {
                w.WriteUInt32(h.Value);
            }
            if (sessions.Count > 0)
            {
                var ctx = new CommandContext { Command = cc, Names = handles.ToArray().Select(h => h.Name).ToList(), Parameters = cpBuffer };
                if (decIdx > 0 && sessions[decIdx].Session is AuthSession d)
                {
                    ctx.DecryptNonce = d.NonceTpm;
                }
                if (encIdx > 0 && encIdx != decIdx && sessions[encIdx].Session is AuthSession e)
                {
                    ctx.EncryptNonce = e.NonceTpm;
                }
                var area = new TpmWriter();
                for (int i = 0; i < sessions.Count; i++)
                {
                    var a = sessions[i].Session.Authorize(ctx, sessions[i].Auth, i);
                    area.WriteUInt32(a.Handle).WriteSized(a.Nonce).WriteByte((byte)a.Attributes).WriteSized(a.Hmac);
                }
                w.WriteUInt32((uint)area.Length).WriteBytes(area.Written);
                area.Clear();
            }
            w.WriteBytes(cpBuffer);
            w.PatchUInt32(2, (uint)w.Length);
            var command = w.ToArray();
            w.Clear();
            byte[] response;
            try
            {
                response = TransmitWithRetry(command);
            }
            finally
            {
                Array.Clear(command);
            }
            return ParseResponse(cc, response, sessions, decIdx, encIdx, responseHandleCount, out responseHandles);
        }
        finally
        {
            foreach (var (s, a) in restore)
            {
                s.Attributes = a;
            }
        }
    }

    /// <summary>
    /// Sends a command, sending it again while the TPM answers TPM_RC_RETRY, TPM_RC_YIELDED or
    /// TPM_RC_TESTING (Part 2, §6.6.3: the command was not executed, so the same bytes, nonces
    /// included, are still valid). Gives up after a bounded number of tries.
    /// </summary>
    private byte[] TransmitWithRetry(byte[] command)
    {
        for (int attempt = 0; ; attempt++)
        {
            var response = _transport.Transmit(command);
            if (response.Length < 10 || attempt >= 20)
            {
                return response;
            }
            uint rc = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(response.AsSpan(6));
            if (rc is not (TpmRc.Retry or TpmRc.Yielded or TpmRc.Testing))
            {
                return response;
            }
            Thread.Sleep(Math.Min(10 * (attempt + 1), 200));
        }
    }

    private static TpmReader ParseResponse(TpmCc cc, byte[] response, List<(TpmSession Session, byte[] Auth)> sessions,
        int decIdx, int encIdx, int responseHandleCount, out uint[] responseHandles)
    {
        var r = new TpmReader(response);
        var tag = (TpmSt)r.ReadUInt16("response tag");
        uint size = r.ReadUInt32("responseSize");
        if (size != response.Length)
        {
            throw new TpmFormatException(2, $"responseSize equal to the {response.Length} bytes received (got {size})");
        }
        uint rc = r.ReadUInt32("responseCode");
        if (rc != TpmRc.Success)
        {
            if (!r.AtEnd)
            {
                throw r.Error("no bytes after an error response code");
            }
            throw new TpmException(cc, rc);
        }
        bool hasSessions = sessions.Count > 0;
        if (tag != (hasSessions ? TpmSt.Sessions : TpmSt.NoSessions))
        {
            throw new TpmFormatException(0, $"response tag {(hasSessions ? "TPM_ST_SESSIONS" : "TPM_ST_NO_SESSIONS")} (got 0x{(ushort)tag:x4})");
        }
        responseHandles = new uint[responseHandleCount];
        for (int i = 0; i < responseHandleCount; i++)
        {
            responseHandles[i] = r.ReadUInt32("response handle");
        }
        if (!hasSessions)
        {
            int start = r.Offset;
            return new TpmReader(r.ReadRest(), start);
        }
        int paramStart = r.Offset + 4;
        var pr = r.ReadSizedReader32("parameterSize");
        var rpBuffer = pr.ReadRest().ToArray();
        var rctx = new ResponseContext { Command = cc, Parameters = rpBuffer };
        for (int i = 0; i < sessions.Count; i++)
        {
            var nonce = r.ReadSized("TPMS_AUTH_RESPONSE.nonce", TpmConstants.MaxDigestSize);
            var attrs = (TpmaSession)r.ReadByte("TPMS_AUTH_RESPONSE.sessionAttributes");
            var hmac = r.ReadSized("TPMS_AUTH_RESPONSE.hmac", TpmConstants.MaxDigestSize);
            sessions[i].Session.CheckResponse(rctx, new AuthResponse(nonce, attrs, hmac), sessions[i].Auth);
        }
        r.ExpectEnd("response authorisation area");
        if (encIdx >= 0)
        {
            var enc = FirstSizedParameter(rpBuffer, "response parameter");
            sessions[encIdx].Session.DecryptResponseParameter(enc, sessions[encIdx].Auth);
        }
        _ = decIdx;
        return new TpmReader(rpBuffer, paramStart);
    }

    /// <summary>The data bytes of a leading TPM2B_ parameter (its size field excluded).</summary>
    private static Span<byte> FirstSizedParameter(byte[] buffer, string what)
    {
        if (buffer.Length < 2)
        {
            throw new TpmFormatException(0, $"a sized first {what}");
        }
        int n = (buffer[0] << 8) | buffer[1];
        if (n > buffer.Length - 2)
        {
            throw new TpmFormatException(0, $"first {what} of {n} bytes within {buffer.Length - 2}");
        }
        return buffer.AsSpan(2, n);
    }

    public void Dispose()
    {
        EncryptionSession?.Forget();
        if (_ownsTransport)
        {
            _transport.Dispose();
        }
    }
}

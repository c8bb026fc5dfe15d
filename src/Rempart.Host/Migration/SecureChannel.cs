using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;

namespace Rempart.Host.Migration;

/// <summary>The migration channel failed: bad frame, authentication failure, peer error, or the peer went away. <see cref="Id"/> is stable.</summary>
public sealed class MigrationChannelException(string id, string message, Exception? inner = null) : Exception(message, inner)
{
    public string Id { get; } = id;
}

/// <summary>Kinds of sealed records.</summary>
public enum FrameType : byte
{
    /// <summary>A JSON control message (<c>{"type": …}</c>).</summary>
    Control = 1,

    /// <summary>Bytes of QEMU's migration stream, in order.</summary>
    Stream = 2,

    /// <summary>A piece of a bundle file: u16 file index, u64 offset, then the bytes.</summary>
    File = 3,
}

/// <summary>
/// The agents' migration channel over one TCP connection (docs/migration.md "Channel"). Before the
/// keys exist, handshake messages are length-prefixed JSON (no secret in them: tokens, the key
/// protector, shares wrapped to TPM keys), sealed after an ephemeral key exchange
/// (<see cref="ProtectHandshakeAsync"/>) so that only the two ends read them. After, every record is AES-256-GCM with a key per
/// direction: nonce = 4 zero bytes ‖ the record's sequence number (u64, big-endian, from 0 per
/// direction, never sent), AAD = the record's header (type, length). A record cannot be dropped,
/// repeated, reordered, moved to the other direction or to another migration (other keys)
/// without failing authentication; the end of a migration is an authenticated control message, so
/// a cut connection is never taken for a finished one. One writer at a time (a lock), one reader.
/// </summary>
public sealed class SecureChannel : IAsyncDisposable
{
    public const int MaxHandshake = 1 << 20;
    /// <summary>The largest payload of a record: 1 MiB of data plus room for a record's own header (a file piece's index and offset).</summary>
    public const int MaxRecord = (1 << 20) + 1024;
    private const int TagSize = 16;
    private const int HeaderSize = 5;

    private readonly Stream _stream;
    private readonly SemaphoreSlim _write = new(1, 1);
    private AesGcm? _send;
    private AesGcm? _receive;
    private ulong _sendSeq;
    private ulong _receiveSeq;
    private byte[] _receiveBuffer = new byte[HeaderSize + 64 * 1024 + TagSize];
    private byte[] _sendBuffer = new byte[HeaderSize + 64 * 1024 + TagSize];

    public SecureChannel(Stream stream) => _stream = stream;

    /// <summary>Bytes of plaintext sent and received in sealed records.</summary>
    public long SentBytes { get; private set; }

    public long ReceivedBytes { get; private set; }

    /// <summary>Sealed records sent (the benchmark reports the mean record size).</summary>
    public long SentRecords { get; private set; }

    /// <summary>Keyed with the channel's keys (not only the handshake's).</summary>
    public bool Keyed => _send is not null && !_handshakeKeys;

    /// <summary>Records are sealed with the ephemeral handshake keys of <see cref="ProtectHandshakeAsync"/>.</summary>
    private bool _handshakeKeys;

    /// <summary>
    /// From now on every record is sealed with these keys: once, after the handshake (which may have run
    /// under <see cref="ProtectHandshakeAsync"/>'s keys; sequence numbers start again at 0 under the new
    /// keys). The keys are copied; the caller wipes its own.
    /// </summary>
    public void Key(ReadOnlySpan<byte> sendKey, ReadOnlySpan<byte> receiveKey)
    {
        if (Keyed)
        {
            throw new InvalidOperationException("the channel is keyed already");
        }
        _send?.Dispose();
        _receive?.Dispose();
        _send = new AesGcm(sendKey, TagSize);
        _receive = new AesGcm(receiveKey, TagSize);
        _sendSeq = 0;
        _receiveSeq = 0;
        _handshakeKeys = false;
    }

    /// <summary>The label of the handshake's key exchange (<see cref="ProtectHandshakeAsync"/>).</summary>
    public const string HandshakeLabel = "rempart/migration/v2/handshake/";

    /// <summary>
    /// Hides the handshake from anyone who only watches the wire: each side sends an ephemeral P-256 key
    /// (<c>key-share {protocol, key}</c>, the only clear message; the source first), both derive
    /// <c>HKDF(salt = binding, ECDH)</c> keys for the two directions, and every later handshake message is a
    /// sealed record. Returns the <b>binding</b>, SHA-256 over the protocol and both ephemeral keys, which
    /// both sides put into the channel's transcript: someone in the middle who runs this exchange with
    /// each side separately (and so can read the handshake) leaves the two sides with different bindings,
    /// their confirmations fail and nothing of the VM moves. Refused: a peer of another protocol
    /// (<c>vm.migrate.protocol</c>), a share that is not one P-256 public key (<c>migration.channel.key-share</c>).
    /// </summary>
    public async Task<byte[]> ProtectHandshakeAsync(bool initiator, string protocol, CancellationToken ct)
    {
        if (_send is not null)
        {
            throw new InvalidOperationException("the channel is keyed already");
        }
        using var ecdh = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        var mine = ecdh.PublicKey.ExportSubjectPublicKeyInfo();
        var share = new JsonObject { ["type"] = "key-share", ["protocol"] = protocol, ["key"] = Convert.ToBase64String(mine) };
        if (initiator)
        {
            await SendHandshakeAsync(share, ct);
        }
        var theirs = await ReceiveHandshakeAsync(ct);
        static string? Str(JsonNode? n) => n is JsonValue v && v.TryGetValue<string>(out var t) ? t : null;
        if (Str(theirs["type"]) == "error")
        {
            Expect(theirs, "key-share"); // throws the other host's refusal
        }
        var theirProtocol = Str(theirs["protocol"]) ?? "(none)";
        if (theirProtocol != protocol)
        {
            throw new MigrationChannelException("vm.migrate.protocol", $"the other host speaks '{Printable(theirProtocol, 64)}', this agent {protocol}");
        }
        if (Str(theirs["type"]) != "key-share")
        {
            throw new MigrationChannelException("migration.channel.unexpected", $"expected 'key-share', got '{Printable(Str(theirs["type"]) ?? "(none)", 40)}'");
        }
        using var peer = ECDiffieHellman.Create();
        byte[] peerKey;
        try
        {
            var text = Str(theirs["key"]) ?? "";
            if (text.Length > 256)
            {
                throw new FormatException("too long");
            }
            peerKey = Convert.FromBase64String(text);
            peer.ImportSubjectPublicKeyInfo(peerKey, out int read);
            if (read != peerKey.Length || peer.KeySize != 256 || peer.ExportParameters(false).Curve.Oid.Value != "1.2.840.10045.3.1.7")
            {
                throw new FormatException("not one P-256 public key");
            }
        }
        catch (Exception e) when (e is FormatException or CryptographicException or InvalidOperationException)
        {
            throw new MigrationChannelException("migration.channel.key-share", "the other host's key share is not a P-256 public key: " + e.Message, e);
        }
        if (!initiator)
        {
            await SendHandshakeAsync(share, ct);
        }
        var binding = Binding(protocol, initiator ? mine : peerKey, initiator ? peerKey : mine);
        using var peerPublic = peer.PublicKey; // its own OpenSSL handle: freed now, not by a finalizer
        var z = ecdh.DeriveRawSecretAgreement(peerPublic);
        var prk = new byte[32];
        var toResponder = new byte[32];
        var toInitiator = new byte[32];
        try
        {
            HKDF.Extract(HashAlgorithmName.SHA256, z, binding, prk);
            HKDF.Expand(HashAlgorithmName.SHA256, prk, toResponder, Encoding.ASCII.GetBytes(HandshakeLabel + "source-to-destination"));
            HKDF.Expand(HashAlgorithmName.SHA256, prk, toInitiator, Encoding.ASCII.GetBytes(HandshakeLabel + "destination-to-source"));
            _send = new AesGcm(initiator ? toResponder : toInitiator, TagSize);
            _receive = new AesGcm(initiator ? toInitiator : toResponder, TagSize);
            _handshakeKeys = true;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(z);
            CryptographicOperations.ZeroMemory(prk);
            CryptographicOperations.ZeroMemory(toResponder);
            CryptographicOperations.ZeroMemory(toInitiator);
        }
        return binding;
    }

    /// <summary>SHA-256(len ‖ protocol ‖ len ‖ the source's key ‖ len ‖ the destination's key), lengths u32 big-endian.</summary>
    public static byte[] Binding(string protocol, ReadOnlySpan<byte> sourceKey, ReadOnlySpan<byte> destinationKey)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        MigrationKeys.AppendField(h, Encoding.UTF8.GetBytes(protocol));
        MigrationKeys.AppendField(h, sourceKey);
        MigrationKeys.AppendField(h, destinationKey);
        return h.GetHashAndReset();
    }

    /// <summary>
    /// A handshake message: sealed with the handshake keys after <see cref="ProtectHandshakeAsync"/>,
    /// clear before it (the key share; nothing secret may go in a clear one).
    /// </summary>
    public async Task SendHandshakeAsync(JsonObject message, CancellationToken ct)
    {
        if (_handshakeKeys)
        {
            await SendControlAsync(message, ct);
            return;
        }
        if (_send is not null)
        {
            throw new InvalidOperationException("the handshake is over: messages are sealed now");
        }
        var bytes = Encoding.UTF8.GetBytes(message.ToJsonString());
        var frame = new byte[4 + bytes.Length];
        BinaryPrimitives.WriteInt32BigEndian(frame, bytes.Length);
        bytes.CopyTo(frame, 4);
        await WriteRawAsync(frame, ct);
    }

    public async Task<JsonObject> ReceiveHandshakeAsync(CancellationToken ct)
    {
        if (_handshakeKeys)
        {
            return await ReceiveControlAsync(ct);
        }
        var len = new byte[4];
        await ReadExactAsync(len, ct);
        int n = BinaryPrimitives.ReadInt32BigEndian(len);
        if (n is <= 0 or > MaxHandshake)
        {
            throw new MigrationChannelException("migration.channel.frame", $"a handshake message of {n} bytes (1 to {MaxHandshake} allowed)");
        }
        var body = new byte[n];
        await ReadExactAsync(body, ct);
        return ParseControl(body, "handshake message");
    }

    /// <summary>A sealed control message.</summary>
    public Task SendControlAsync(JsonObject message, CancellationToken ct) =>
        SendAsync(FrameType.Control, Encoding.UTF8.GetBytes(message.ToJsonString()), ct);

    /// <summary>Seals and sends one record (payload up to <see cref="MaxRecord"/> bytes).</summary>
    public async Task SendAsync(FrameType type, ReadOnlyMemory<byte> payload, CancellationToken ct)
    {
        await _write.WaitAsync(ct);
        try
        {
            int total = Seal(type, payload.Span);
            await _stream.WriteAsync(_sendBuffer.AsMemory(0, total), ct);
            SentBytes += payload.Length;
            SentRecords++;
        }
        finally
        {
            _write.Release();
        }
    }

    /// <summary>
    /// <see cref="SendAsync"/> on the calling thread, blocking: the relay's bulk path
    /// (<see cref="MigrationRelay"/>) runs on its own threads, where a blocking write costs one wake-up
    /// instead of the thread-pool hand-offs of an await.
    /// </summary>
    public void Send(FrameType type, ReadOnlySpan<byte> payload)
    {
        _write.Wait();
        try
        {
            int total = Seal(type, payload);
            _stream.Write(_sendBuffer, 0, total);
            SentBytes += payload.Length;
            SentRecords++;
        }
        finally
        {
            _write.Release();
        }
    }

    /// <summary>Seals one record into the send buffer (the write lock is held); answers its length.</summary>
    private int Seal(FrameType type, ReadOnlySpan<byte> payload)
    {
        var aead = _send ?? throw new InvalidOperationException("the channel has no keys yet");
        if (payload.Length > MaxRecord)
        {
            throw new ArgumentOutOfRangeException(nameof(payload), $"a record carries at most {MaxRecord} bytes");
        }
        int total = HeaderSize + payload.Length + TagSize;
        if (_sendBuffer.Length < total)
        {
            _sendBuffer = new byte[total];
        }
        var buf = _sendBuffer;
        buf[0] = (byte)type;
        BinaryPrimitives.WriteInt32BigEndian(buf.AsSpan(1), payload.Length + TagSize);
        Span<byte> nonce = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64BigEndian(nonce[4..], _sendSeq);
        aead.Encrypt(nonce, payload, buf.AsSpan(HeaderSize, payload.Length), buf.AsSpan(HeaderSize + payload.Length, TagSize), buf.AsSpan(0, HeaderSize));
        _sendSeq = checked(_sendSeq + 1);
        return total;
    }

    /// <summary>
    /// Receives and opens one record; the payload is valid until the next call. Any failure to
    /// authenticate ends the channel (<c>migration.channel.auth</c>).
    /// </summary>
    public async Task<(FrameType Type, ReadOnlyMemory<byte> Payload)> ReceiveAsync(CancellationToken ct)
    {
        var header = new byte[HeaderSize];
        await ReadExactAsync(header, ct);
        int sealedLength = SealedLength(header);
        if (_receiveBuffer.Length < HeaderSize + sealedLength)
        {
            _receiveBuffer = new byte[HeaderSize + sealedLength];
        }
        header.CopyTo(_receiveBuffer, 0);
        await ReadExactAsync(_receiveBuffer.AsMemory(HeaderSize, sealedLength), ct);
        var (type, n) = Open(_receiveBuffer, sealedLength);
        return (type, _receiveBuffer.AsMemory(HeaderSize, n));
    }

    /// <summary>The size of a buffer that holds any record for <see cref="Receive"/>.</summary>
    public const int RecordBufferSize = HeaderSize + MaxRecord + TagSize;

    /// <summary>Where <see cref="Receive"/> puts the payload in the caller's buffer.</summary>
    public const int PayloadOffset = HeaderSize;

    /// <summary>
    /// <see cref="ReceiveAsync"/> on the calling thread, blocking, into the caller's buffer (at least
    /// <see cref="RecordBufferSize"/> bytes): the payload is <c>buffer[PayloadOffset..PayloadOffset + Length]</c>,
    /// so a relay can hand one buffer on while it receives into another, with no copy.
    /// </summary>
    public (FrameType Type, int Length) Receive(byte[] buffer)
    {
        if (buffer.Length < RecordBufferSize)
        {
            throw new ArgumentException($"a receive buffer holds at least {RecordBufferSize} bytes", nameof(buffer));
        }
        ReadExact(buffer.AsSpan(0, HeaderSize));
        int sealedLength = SealedLength(buffer);
        ReadExact(buffer.AsSpan(HeaderSize, sealedLength));
        return Open(buffer, sealedLength);
    }

    private static int SealedLength(ReadOnlySpan<byte> header)
    {
        int sealedLength = BinaryPrimitives.ReadInt32BigEndian(header[1..]);
        if (sealedLength is < TagSize or > MaxRecord + TagSize)
        {
            throw new MigrationChannelException("migration.channel.frame", $"a record of {sealedLength} bytes ({TagSize} to {MaxRecord + TagSize} allowed)");
        }
        return sealedLength;
    }

    /// <summary>Authenticates and decrypts in place the record in <paramref name="buf"/> (header, then sealed bytes).</summary>
    private (FrameType Type, int Length) Open(byte[] buf, int sealedLength)
    {
        var aead = _receive ?? throw new InvalidOperationException("the channel has no keys yet");
        int n = sealedLength - TagSize;
        Span<byte> nonce = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64BigEndian(nonce[4..], _receiveSeq);
        try
        {
            aead.Decrypt(nonce, buf.AsSpan(HeaderSize, n), buf.AsSpan(HeaderSize + n, TagSize), buf.AsSpan(HeaderSize, n), buf.AsSpan(0, HeaderSize));
        }
        catch (AuthenticationTagMismatchException e)
        {
            CryptographicOperations.ZeroMemory(buf.AsSpan(HeaderSize, n));
            throw new MigrationChannelException("migration.channel.auth", $"record {_receiveSeq} does not authenticate (altered, replayed, reordered or from another channel)", e);
        }
        _receiveSeq = checked(_receiveSeq + 1);
        if (!Enum.IsDefined((FrameType)buf[0]))
        {
            throw new MigrationChannelException("migration.channel.frame", $"record {_receiveSeq - 1} has unknown type {buf[0]}");
        }
        ReceivedBytes += n;
        return ((FrameType)buf[0], n);
    }

    /// <summary>Receives a sealed control message; the peer's <c>error</c> message becomes an exception with its id.</summary>
    public async Task<JsonObject> ReceiveControlAsync(CancellationToken ct)
    {
        var (type, payload) = await ReceiveAsync(ct);
        if (type != FrameType.Control)
        {
            throw new MigrationChannelException("migration.channel.unexpected", $"expected a control message, got a {type} record");
        }
        return ParseControl(payload.Span, "control message");
    }

    /// <summary>The message's <c>type</c>, checked against what the protocol expects here; a peer's <c>error</c> is thrown.</summary>
    public static JsonObject Expect(JsonObject message, string type)
    {
        var got = message["type"]?.GetValue<string>();
        if (got == "error")
        {
            var id = message["id"]?.GetValue<string>() ?? "migration.peer";
            throw new MigrationChannelException(Printable(id, 80), "the other host refused: " + Printable(message["message"]?.GetValue<string>() ?? "(no reason)", 500));
        }
        if (got != type)
        {
            throw new MigrationChannelException("migration.channel.unexpected", $"expected '{type}', got '{Printable(got ?? "(none)", 40)}'");
        }
        return message;
    }

    /// <summary>Text from the other host, cut and without control characters, before it goes into a message or a log.</summary>
    public static string Printable(string s, int max)
    {
        var clean = new string([.. s.Take(max).Select(c => char.IsControl(c) ? '?' : c)]);
        return s.Length > max ? clean + "…" : clean;
    }

    private static JsonObject ParseControl(ReadOnlySpan<byte> body, string what)
    {
        try
        {
            return System.Text.Json.JsonSerializer.Deserialize<JsonObject>(body)
                ?? throw new MigrationChannelException("migration.channel.message", $"an empty {what}");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new MigrationChannelException("migration.channel.message", $"a {what} is not a JSON object: {e.Message}", e);
        }
    }

    private async Task WriteRawAsync(byte[] frame, CancellationToken ct)
    {
        await _write.WaitAsync(ct);
        try
        {
            await _stream.WriteAsync(frame, ct);
        }
        finally
        {
            _write.Release();
        }
    }

    private async Task ReadExactAsync(Memory<byte> buffer, CancellationToken ct)
    {
        try
        {
            await _stream.ReadExactlyAsync(buffer, ct);
        }
        catch (Exception e) when (Broken(e) is { } broken)
        {
            throw broken;
        }
    }

    private void ReadExact(Span<byte> buffer)
    {
        try
        {
            _stream.ReadExactly(buffer);
        }
        catch (Exception e) when (Broken(e) is { } broken)
        {
            throw broken;
        }
    }

    private MigrationChannelException? Broken(Exception e) => e switch
    {
        EndOfStreamException or ObjectDisposedException or IOException when _aborted => new("migration.channel.closed", "the channel was closed on this side (cancelled or timed out)", e),
        EndOfStreamException => new("migration.channel.closed", "the other host closed the connection", e),
        IOException => new("migration.channel.closed", "the connection to the other host broke: " + e.Message, e),
        _ => null,
    };

    private volatile bool _aborted;

    /// <summary>
    /// Closes the connection under a blocked <see cref="Send"/> or <see cref="Receive"/> (a cancelled or
    /// timed-out relay): they fail with <c>migration.channel.closed</c>. The channel is unusable after.
    /// </summary>
    public void Abort()
    {
        _aborted = true;
        _stream.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        _send?.Dispose();
        _receive?.Dispose();
        CryptographicOperations.ZeroMemory(_receiveBuffer);
        CryptographicOperations.ZeroMemory(_sendBuffer);
        await _stream.DisposeAsync();
        _write.Dispose();
    }
}

using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Rempart.Host.Qemu;

/// <summary>An asynchronous QMP event (QMP spec §2.5).</summary>
public sealed record QmpEvent(string Name, JsonObject? Data, DateTimeOffset Timestamp);

/// <summary>
/// A QMP client (QEMU's docs/interop/qmp-spec): one JSON object a line each way, the greeting,
/// capabilities negotiation, commands matched to replies by <c>id</c>, events on a channel.
/// Parsing is strict — one JSON object per line, no comments, trailing commas or duplicate
/// members, a 1 MiB line limit — and any protocol break closes the connection and fails every
/// pending command with <see cref="QmpProtocolException"/>. Nothing from the wire surfaces as
/// any other exception type.
/// </summary>
public sealed class QmpClient : IAsyncDisposable
{
    public const int MaxLineBytes = 1 << 20;
    private static readonly JsonDocumentOptions Strict = new()
    {
        AllowTrailingCommas = false,
        CommentHandling = JsonCommentHandling.Disallow,
        MaxDepth = 64,
        AllowDuplicateProperties = false,
    };

    private readonly Stream _input;
    private readonly Stream _output;
    private readonly IDisposable? _owner;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<string, Pending> _pending = new(StringComparer.Ordinal);
    private readonly Channel<QmpEvent> _events = Channel.CreateBounded<QmpEvent>(new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.DropOldest });
    private readonly CancellationTokenSource _closing = new();
    private byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;
    private long _nextId;
    private Exception? _failure;
    private Task _reader = Task.CompletedTask;

    private sealed record Pending(string Command, TaskCompletionSource<JsonNode?> Reply);

    private QmpClient(Stream input, Stream output, IDisposable? owner)
    {
        _input = input;
        _output = output;
        _owner = owner;
    }

    /// <summary>QEMU's version from the greeting.</summary>
    public QemuVersion Version { get; private set; }

    /// <summary>The reply timeout when a call gives none.</summary>
    public TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Events in arrival order (the oldest are dropped past 1024 unread).</summary>
    public ChannelReader<QmpEvent> Events => _events.Reader;

    /// <summary>Completes when the connection ends (faulted with the reason, unless it was disposed).</summary>
    public Task Completion => _reader;

    /// <summary>Connects to QEMU's QMP unix socket, reads the greeting and leaves capabilities negotiation mode.</summary>
    public static async Task<QmpClient> ConnectAsync(string socketPath, TimeSpan timeout, CancellationToken ct = default)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(timeout);
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cts.Token).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        var stream = new NetworkStream(socket, ownsSocket: true);
        return await OpenAsync(stream, stream, timeout, stream, ct).ConfigureAwait(false);
    }

    /// <summary>Runs QMP over a pair of streams (a socket, or a child's stdout/stdin with <c>-qmp stdio</c>); <c>owner</c> is disposed with the client.</summary>
    public static async Task<QmpClient> OpenAsync(Stream input, Stream output, TimeSpan timeout, IDisposable? owner, CancellationToken ct = default)
    {
        var client = new QmpClient(input, output, owner);
        try
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(timeout);
            byte[]? line;
            try
            {
                line = await client.ReadLineAsync(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new TimeoutException($"no QMP greeting within {timeout.TotalSeconds:0.#} s (is another client connected?)");
            }
            if (line is null)
            {
                throw new QmpProtocolException("qmp.closed", "the connection closed before the QMP greeting");
            }
            client.Version = ParseGreeting(line);
            client._reader = Task.Run(client.ReadLoopAsync, CancellationToken.None);
            await client.ExecuteAsync("qmp_capabilities", (JsonObject?)null, timeout, ct).ConfigureAwait(false);
            return client;
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Runs a command and returns its <c>return</c> value; QEMU's error becomes <see cref="QmpException"/>.</summary>
    public Task<JsonNode?> ExecuteAsync(string command, JsonObject? arguments = null, TimeSpan? timeout = null, CancellationToken ct = default) =>
        ExecuteSensitiveAsync(command, arguments is null ? null : w => arguments.WriteTo(w), timeout, ct);

    /// <summary>
    /// Runs a command whose arguments the caller writes straight into the message buffer (so a
    /// secret is encoded once, into a buffer that is zeroed once sent, and never becomes a string).
    /// </summary>
    public async Task<JsonNode?> ExecuteSensitiveAsync(string command, Action<Utf8JsonWriter>? writeArguments, TimeSpan? timeout = null, CancellationToken ct = default)
    {
        ObjectDisposedException.ThrowIf(_closing.IsCancellationRequested && _failure is null, this);
        if (_failure is not null)
        {
            throw new QmpProtocolException("qmp.closed", "the QMP connection is closed", _failure);
        }
        var id = "r" + Interlocked.Increment(ref _nextId).ToString(CultureInfo.InvariantCulture);
        var pending = new Pending(command, new TaskCompletionSource<JsonNode?>(TaskCreationOptions.RunContinuationsAsynchronously));
        _pending[id] = pending;
        var limit = timeout ?? DefaultTimeout;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct, _closing.Token);
        cts.CancelAfter(limit);
        try
        {
            await SendAsync(id, command, writeArguments, cts.Token).ConfigureAwait(false);
            return await pending.Reply.Task.WaitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested && _failure is null && !_closing.IsCancellationRequested)
        {
            throw new TimeoutException($"QMP {command}: no reply within {limit.TotalSeconds:0.#} s");
        }
        catch (OperationCanceledException) when (_failure is not null)
        {
            throw new QmpProtocolException("qmp.closed", "the QMP connection closed", _failure);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            // This client was disposed while the command waited (e.g. QEMU exited after 'quit').
            throw new QmpProtocolException("qmp.closed", $"QMP {command}: the client was closed before the reply");
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    /// <summary>Waits for the next event named <paramref name="name"/> (other events are consumed and dropped).</summary>
    public async Task<QmpEvent> WaitForEventAsync(string name, TimeSpan timeout, CancellationToken ct = default)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        try
        {
            while (true)
            {
                var e = await _events.Reader.ReadAsync(cts.Token).ConfigureAwait(false);
                if (e.Name == name)
                {
                    return e;
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"no QMP event {name} within {timeout.TotalSeconds:0.#} s");
        }
        catch (ChannelClosedException ex)
        {
            throw new QmpProtocolException("qmp.closed", $"the QMP connection closed before event {name}", ex.InnerException ?? _failure);
        }
    }

    private async Task SendAsync(string id, string command, Action<Utf8JsonWriter>? writeArguments, CancellationToken ct)
    {
        // Sized so that the writer never grows it: no copy of the message is left behind.
        var buffer = new ArrayBufferWriter<byte>(64 * 1024);
        try
        {
            using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = false, SkipValidation = false }))
            {
                w.WriteStartObject();
                w.WriteString("execute", command);
                if (writeArguments is not null)
                {
                    w.WritePropertyName("arguments");
                    writeArguments(w);
                }
                w.WriteString("id", id);
                w.WriteEndObject();
            }
            buffer.Write("\n"u8);
            await _writeLock.WaitAsync(ct).ConfigureAwait(false);
            try
            {
                await _output.WriteAsync(buffer.WrittenMemory, ct).ConfigureAwait(false);
                await _output.FlushAsync(ct).ConfigureAwait(false);
            }
            finally
            {
                _writeLock.Release();
            }
        }
        finally
        {
            buffer.Clear(); // zeroes what was written
        }
    }

    private async Task ReadLoopAsync()
    {
        Exception? failure = null;
        try
        {
            while (true)
            {
                var line = await ReadLineAsync(_closing.Token).ConfigureAwait(false);
                if (line is null)
                {
                    failure = new QmpProtocolException("qmp.closed", "QEMU closed the QMP connection");
                    break;
                }
                if (line.Length > 0)
                {
                    try
                    {
                        Dispatch(line);
                    }
                    catch (Exception ex) when (ex is InvalidOperationException or System.Text.DecoderFallbackException)
                    {
                        // A string with invalid UTF-8 or a lone surrogate escape (GetString / GetRawText cannot transcode it).
                        throw new QmpProtocolException("qmp.message", "a QMP message holds text that is not valid Unicode", ex);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (_closing.IsCancellationRequested)
        {
        }
        catch (QmpProtocolException ex)
        {
            failure = ex;
        }
        catch (IOException ex)
        {
            failure = new QmpProtocolException("qmp.closed", "the QMP connection failed: " + ex.Message, ex);
        }
        catch (ObjectDisposedException) when (_closing.IsCancellationRequested)
        {
        }
        Fail(failure ?? new QmpProtocolException("qmp.closed", "the QMP client was disposed"), closedByUs: failure is null);
        if (failure is not null)
        {
            throw failure;
        }
    }

    private void Fail(Exception reason, bool closedByUs)
    {
        if (!closedByUs)
        {
            _failure ??= reason;
        }
        _events.Writer.TryComplete(closedByUs ? null : reason);
        foreach (var (_, p) in _pending)
        {
            p.Reply.TrySetException(reason is QmpProtocolException ? reason : new QmpProtocolException("qmp.closed", reason.Message, reason));
        }
    }

    /// <summary>Classifies one message (QMP spec §2.4 replies, §2.5 events).</summary>
    private void Dispatch(byte[] line)
    {
        using var doc = Parse(line);
        var root = doc.RootElement;
        var hasReturn = root.TryGetProperty("return", out var ret);
        var hasError = root.TryGetProperty("error", out var error);
        var hasEvent = root.TryGetProperty("event", out var ev);
        if ((hasReturn ? 1 : 0) + (hasError ? 1 : 0) + (hasEvent ? 1 : 0) != 1)
        {
            throw new QmpProtocolException("qmp.message", "a QMP message is exactly one of a return, an error or an event");
        }
        if (hasEvent)
        {
            if (ev.ValueKind != JsonValueKind.String || !root.TryGetProperty("timestamp", out var ts) || ts.ValueKind != JsonValueKind.Object
                || !ts.TryGetProperty("seconds", out var s) || !s.TryGetInt64(out var seconds)
                || !ts.TryGetProperty("microseconds", out var us) || !us.TryGetInt64(out var micros) || micros is < 0 or > 999_999
                || seconds is < -62135596800 or > 253402300799)
            {
                throw new QmpProtocolException("qmp.message", "an event needs a string name and a timestamp {seconds, microseconds}");
            }
            JsonObject? data = null;
            if (root.TryGetProperty("data", out var d))
            {
                data = d.ValueKind == JsonValueKind.Object ? JsonObject.Create(d) : throw new QmpProtocolException("qmp.message", "event data is an object");
            }
            var when = seconds < 0 ? DateTimeOffset.MinValue : DateTimeOffset.FromUnixTimeSeconds(seconds).AddTicks(micros * 10);
            _events.Writer.TryWrite(new QmpEvent(ev.GetString()!, data, when));
            return;
        }
        // The reply's content first: a malformed one is qmp.message whether or not its command is registered yet.
        var returned = hasReturn ? JsonNode.Parse(ret.GetRawText()) : null;
        if (!root.TryGetProperty("id", out var idElement) || idElement.ValueKind != JsonValueKind.String)
        {
            throw new QmpProtocolException("qmp.reply.id", "a reply without the id of a command this client sent");
        }
        var id = idElement.GetString()!;
        if (!_pending.TryGetValue(id, out var pending))
        {
            // A reply to a command that timed out is dropped; one to an id never sent is a protocol break.
            if (long.TryParse(id.AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture, out var n) && id[0] == 'r' && n <= Interlocked.Read(ref _nextId) && n > 0)
            {
                return;
            }
            throw new QmpProtocolException("qmp.reply.id", "a reply to a command this client never sent");
        }
        if (hasReturn)
        {
            pending.Reply.TrySetResult(returned);
            return;
        }
        if (error.ValueKind != JsonValueKind.Object || !error.TryGetProperty("class", out var cls) || cls.ValueKind != JsonValueKind.String
            || !error.TryGetProperty("desc", out var desc) || desc.ValueKind != JsonValueKind.String)
        {
            throw new QmpProtocolException("qmp.message", "an error needs a string class and desc");
        }
        pending.Reply.TrySetException(new QmpException(pending.Command, cls.GetString()!, desc.GetString()!));
    }

    private static JsonDocument Parse(byte[] line)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(line, Strict);
        }
        catch (JsonException ex)
        {
            throw new QmpProtocolException("qmp.json", $"malformed QMP message at byte {ex.BytePositionInLine}: {ex.Message}", ex);
        }
        catch (ArgumentException ex)
        {
            throw new QmpProtocolException("qmp.json", "malformed QMP message: " + ex.Message, ex);
        }
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            doc.Dispose();
            throw new QmpProtocolException("qmp.message", "a QMP message is a JSON object");
        }
        return doc;
    }

    /// <summary>The greeting (§2.2): <c>{"QMP": {"version": {"qemu": {"major", "minor", "micro"}, "package"}, "capabilities": [...]}}</c>.</summary>
    internal static QemuVersion ParseGreeting(byte[] line)
    {
        using var doc = Parse(line);
        if (!doc.RootElement.TryGetProperty("QMP", out var qmp) || qmp.ValueKind != JsonValueKind.Object
            || !qmp.TryGetProperty("version", out var version) || version.ValueKind != JsonValueKind.Object
            || !version.TryGetProperty("qemu", out var qemu) || qemu.ValueKind != JsonValueKind.Object
            || !TryInt(qemu, "major", out var major) || !TryInt(qemu, "minor", out var minor) || !TryInt(qemu, "micro", out var micro)
            || !qmp.TryGetProperty("capabilities", out var caps) || caps.ValueKind != JsonValueKind.Array)
        {
            throw new QmpProtocolException("qmp.greeting", "the first message is not a QMP greeting with a QEMU version");
        }
        return new QemuVersion(major, minor, micro);

        static bool TryInt(JsonElement e, string name, out int value)
        {
            value = 0;
            return e.TryGetProperty(name, out var p) && p.ValueKind == JsonValueKind.Number && p.TryGetInt32(out value) && value >= 0;
        }
    }

    /// <summary>The next line without its CR LF; null at end of stream.</summary>
    private async Task<byte[]?> ReadLineAsync(CancellationToken ct)
    {
        var scanned = _start;
        while (true)
        {
            var nl = Array.IndexOf(_buffer, (byte)'\n', scanned, _end - scanned);
            if (nl >= 0)
            {
                var length = nl - _start;
                if (length > 0 && _buffer[nl - 1] == '\r')
                {
                    length--;
                }
                var line = _buffer.AsSpan(_start, length).ToArray();
                _start = nl + 1;
                return line;
            }
            scanned = _end;
            if (_end - _start >= MaxLineBytes)
            {
                throw new QmpProtocolException("qmp.line-too-long", $"a QMP line longer than {MaxLineBytes} bytes");
            }
            if (_end == _buffer.Length)
            {
                // Compact, or grow up to the line limit.
                if (_start > 0)
                {
                    Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                    scanned -= _start;
                    _end -= _start;
                    _start = 0;
                }
                else
                {
                    GrowTo(Math.Min(_buffer.Length * 2, MaxLineBytes + 2));
                }
            }
            var read = await _input.ReadAsync(_buffer.AsMemory(_end), ct).ConfigureAwait(false);
            if (read == 0)
            {
                if (_end > _start)
                {
                    throw new QmpProtocolException("qmp.closed", "the connection closed in the middle of a QMP message");
                }
                return null;
            }
            _end += read;
        }
    }

    private void GrowTo(int size)
    {
        var bigger = new byte[size];
        Buffer.BlockCopy(_buffer, 0, bigger, 0, _end);
        _buffer = bigger;
    }

    public async ValueTask DisposeAsync()
    {
        if (_closing.IsCancellationRequested)
        {
            return;
        }
        await _closing.CancelAsync().ConfigureAwait(false);
        _owner?.Dispose();
        if (!ReferenceEquals(_owner, _input))
        {
            await _input.DisposeAsync().ConfigureAwait(false);
        }
        if (!ReferenceEquals(_output, _input) && !ReferenceEquals(_owner, _output))
        {
            await _output.DisposeAsync().ConfigureAwait(false);
        }
        try
        {
            await _reader.ConfigureAwait(false);
        }
        catch (QmpProtocolException)
        {
        }
        _closing.Dispose();
        _writeLock.Dispose();
    }
}

using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json.Nodes;

namespace Rempart.Host.Migration;

/// <summary>
/// The byte-moving half of a live migration (docs/migration.md "What travels"): QEMU's outgoing
/// stream into sealed Stream records on the source, and on the destination Stream records into its
/// QEMU and File records into the bundle's files. Shared by the agent and bench/Rempart.MigrationBench,
/// so the benchmark measures the relay the agent runs.
/// </summary>
public static class MigrationRelay
{
    // The bulk path runs on two dedicated threads per side with blocking socket calls, buffers handed
    // between them through small queues: QEMU fills (or drains) one buffer while another is sealed and
    // sent (or received and opened). Measured with bench/migration.sh --relay-only, this costs much less
    // CPU per GB than awaits, whose every completion is handed from the socket engine to the thread pool
    // (bench/README.md, "Live migration").
    private const int ReadSize = 512 * 1024;
    private const int Buffers = 3;

    /// <summary>QEMU's outgoing stream into Stream records, until QEMU closes it; answers the byte count.</summary>
    public static Task<long> PumpOutAsync(Socket conn, SecureChannel channel, CancellationToken ct) =>
        Task.Factory.StartNew(() => PumpOut(conn, channel, ct), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    private static long PumpOut(Socket conn, SecureChannel channel, CancellationToken ct)
    {
        var buffers = new byte[Buffers][];
        for (int i = 0; i < Buffers; i++)
        {
            buffers[i] = new byte[ReadSize];
        }
        using var free = new BlockingCollection<int>();
        using var full = new BlockingCollection<(int Index, int Length)>();
        for (int i = 0; i < Buffers; i++)
        {
            free.Add(i);
        }
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        long total = 0;
        Exception? sendFailure = null;
        var sender = new Thread(() =>
        {
            try
            {
                foreach (var (index, length) in full.GetConsumingEnumerable())
                {
                    channel.Send(FrameType.Stream, buffers[index].AsSpan(0, length));
                    total += length;
                    free.Add(index);
                }
            }
            catch (Exception e)
            {
                sendFailure = e;
                stop.Cancel(); // the reader stops too
            }
        }) { IsBackground = true, Name = "migration-out-send" };
        sender.Start();
        // Cancelled: the reader's blocked receive returns (its socket is shut down).
        var unblock = stop.Token.Register(() => Try(() => conn.Shutdown(SocketShutdown.Receive)));
        try
        {
            while (true)
            {
                int index = free.Take(stop.Token);
                var b = buffers[index];
                int n = conn.Receive(b, 0, b.Length, SocketFlags.None);
                if (n == 0)
                {
                    free.Add(index);
                    break;
                }
                // QEMU writes its stream in 32 KiB pieces: take what is already queued into the same record
                // (fewer, larger records: fewer seals and socket calls on both sides).
                int queued;
                while (n < b.Length && (queued = conn.Available) > 0)
                {
                    int more = conn.Receive(b, n, Math.Min(b.Length - n, queued), SocketFlags.None);
                    if (more == 0)
                    {
                        break;
                    }
                    n += more;
                }
                full.Add((index, n));
            }
        }
        catch (Exception e) when (stop.IsCancellationRequested && e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // a send failure or the caller's cancellation, reported below
        }
        finally
        {
            unblock.Dispose();
            full.CompleteAdding();
            if (!sender.Join(TimeSpan.FromSeconds(5)))
            {
                channel.Abort(); // a peer that stopped reading: the blocked send fails, the thread ends
                sender.Join();
            }
            foreach (var b in buffers)
            {
                CryptographicOperations.ZeroMemory(b); // guest RAM passed through here
            }
        }
        if (sendFailure is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(sendFailure);
        }
        ct.ThrowIfCancellationRequested();
        return total;
    }

    /// <summary>
    /// Stream records into QEMU and File records into the bundle's files, until the source's
    /// <c>stream-end</c> (whose byte count must match); a peer silent for 5 minutes ends it.
    /// </summary>
    public static Task<long> PumpInAsync(SecureChannel channel, Stream qemu, IReadOnlyList<IncomingFile> files, CancellationToken ct) =>
        Task.Factory.StartNew(() => PumpIn(channel, qemu, files, ct, TimeSpan.FromMinutes(5)), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    internal static long PumpIn(SecureChannel channel, Stream qemu, IReadOnlyList<IncomingFile> files, CancellationToken ct, TimeSpan silence)
    {
        var buffers = new byte[Buffers][];
        for (int i = 0; i < Buffers; i++)
        {
            buffers[i] = new byte[SecureChannel.RecordBufferSize];
        }
        using var free = new BlockingCollection<int>();
        using var full = new BlockingCollection<(int Index, int Length)>();
        for (int i = 0; i < Buffers; i++)
        {
            free.Add(i);
        }
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var drained = new SemaphoreSlim(0);
        Exception? writeFailure = null;
        // QEMU takes one record's bytes while the next is received and opened into another buffer.
        var writer = new Thread(() =>
        {
            try
            {
                foreach (var (index, length) in full.GetConsumingEnumerable())
                {
                    if (index < 0)
                    {
                        qemu.Flush();
                        drained.Release(); // everything before this mark reached QEMU
                        continue;
                    }
                    qemu.Write(buffers[index], SecureChannel.PayloadOffset, length);
                    free.Add(index);
                }
            }
            catch (Exception e)
            {
                writeFailure = e;
                stop.Cancel();
                drained.Release();
            }
        }) { IsBackground = true, Name = "migration-in-write" };
        writer.Start();
        bool timedOut = false;
        // A silent peer or a cancellation closes the channel under the blocked receive.
        using var watchdog = new Timer(_ => { timedOut = true; channel.Abort(); });
        var unblock = ct.Register(() => Try(channel.Abort));
        long total = 0;
        try
        {
            while (true)
            {
                int index = free.Take(stop.Token);
                watchdog.Change(silence, Timeout.InfiniteTimeSpan);
                var (type, length) = channel.Receive(buffers[index]);
                watchdog.Change(Timeout.Infinite, Timeout.Infinite);
                var payload = buffers[index].AsSpan(SecureChannel.PayloadOffset, length);
                switch (type)
                {
                    case FrameType.Stream:
                        full.Add((index, length));
                        total += length;
                        continue;
                    case FrameType.File:
                        WriteFilePiece(files, payload);
                        break;
                    case FrameType.Control:
                        var message = System.Text.Json.JsonSerializer.Deserialize<JsonObject>(payload) ?? new JsonObject();
                        if (message["type"]?.GetValue<string>() == "disks-final")
                        {
                            foreach (var f in files)
                            {
                                f.Handle.Flush(flushToDisk: true);
                            }
                            break;
                        }
                        SecureChannel.Expect(message, "stream-end");
                        var said = message["bytes"]?.GetValue<long>();
                        if (said != total)
                        {
                            throw new MigrationChannelException("migration.stream.length", $"the source sent {said} stream bytes by its count, {total} arrived");
                        }
                        full.Add((-1, 0));
                        drained.Wait(stop.Token);
                        if (writeFailure is null)
                        {
                            return total;
                        }
                        break;
                }
                free.Add(index);
            }
        }
        catch (Exception e) when ((ct.IsCancellationRequested || stop.IsCancellationRequested) && e is OperationCanceledException or MigrationChannelException { Id: "migration.channel.closed" })
        {
            // the writer failed (reported below) or the caller cancelled
        }
        catch (MigrationChannelException e) when (timedOut && e.Id == "migration.channel.closed")
        {
            throw new MigrationChannelException("migration.channel.timeout", $"the other host said nothing for {silence.TotalSeconds:0} s");
        }
        finally
        {
            unblock.Dispose();
            full.CompleteAdding();
            if (!writer.Join(TimeSpan.FromSeconds(5)))
            {
                // Only on failure can QEMU still hold a write back (the normal end waited for it to drain):
                // the migration is over, close QEMU's stream under the writer.
                Try(qemu.Dispose);
                writer.Join();
            }
            foreach (var b in buffers)
            {
                CryptographicOperations.ZeroMemory(b);
            }
        }
        if (writeFailure is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(writeFailure);
        }
        ct.ThrowIfCancellationRequested();
        throw new InvalidOperationException("unreachable");
    }

    private static void Try(Action a)
    {
        try
        {
            a();
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException)
        {
            // already closed
        }
    }

    public sealed record IncomingFile(string Path, long Size, FileStream Handle) : IDisposable
    {
        public void Dispose() => Handle.Dispose();
    }

    internal static async Task ReceiveFilesAsync(SecureChannel channel, IReadOnlyList<IncomingFile> files, string end, CancellationToken ct)
    {
        while (true)
        {
            var (type, payload) = await WithLimit(channel.ReceiveAsync, ct, TimeSpan.FromSeconds(90));
            if (type == FrameType.File)
            {
                WriteFilePiece(files, payload.Span);
                continue;
            }
            if (type != FrameType.Control)
            {
                throw new MigrationChannelException("migration.channel.unexpected", $"a {type} record while the bundle's files arrive");
            }
            SecureChannel.Expect(System.Text.Json.JsonSerializer.Deserialize<JsonObject>(payload.Span) ?? new JsonObject(), end);
            foreach (var f in files)
            {
                f.Handle.Flush(flushToDisk: true);
            }
            return;
        }
    }

    /// <summary>One File record: u16 index, u64 offset, bytes — inside the file's declared size (a resize comes as a record with no bytes at the new size).</summary>
    public static void WriteFilePiece(IReadOnlyList<IncomingFile> files, ReadOnlySpan<byte> record)
    {
        if (record.Length < 10)
        {
            throw new MigrationChannelException("migration.file.record", "a file record shorter than its header");
        }
        int index = BinaryPrimitives.ReadUInt16BigEndian(record);
        long offset = (long)BinaryPrimitives.ReadUInt64BigEndian(record[2..]);
        var data = record[10..];
        if (index >= files.Count || offset < 0 || offset > MaxFileSize || offset + data.Length > MaxFileSize)
        {
            throw new MigrationChannelException("migration.file.record", $"a file record for file {index} at {offset} is outside the bundle announced");
        }
        var f = files[index];
        if (data.Length == 0)
        {
            f.Handle.SetLength(offset); // the file's size now (qcow2 grows as the guest writes)
            return;
        }
        if (offset + data.Length > Math.Max(f.Size, f.Handle.Length))
        {
            throw new MigrationChannelException("migration.file.record", $"a record writes past the end of {f.Path}");
        }
        RandomAccess.Write(f.Handle.SafeFileHandle, data, offset);
    }

    public const long MaxFileSize = 1L << 42;


    /// <summary>One receive with its own time limit (a silent peer never holds a migration forever).</summary>
    public static async Task<T> WithLimit<T>(Func<CancellationToken, Task<T>> receive, CancellationToken ct, TimeSpan limit)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(limit);
        try
        {
            return await receive(cts.Token);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new MigrationChannelException("migration.channel.timeout", $"the other host said nothing for {limit.TotalSeconds:0} s");
        }
    }
}

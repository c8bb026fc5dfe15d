using System.Buffers.Binary;
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
    /// <summary>QEMU's outgoing stream into Stream records, until QEMU closes it; answers the byte count.</summary>
    public static async Task<long> PumpOutAsync(Socket conn, SecureChannel channel, CancellationToken ct)
    {
        // Two buffers: QEMU fills the next one while the current one is sealed and sent.
        byte[][] buffers = [new byte[ReadSize], new byte[ReadSize]];
        long total = 0;
        int current = 0;
        try
        {
            var pending = conn.ReceiveAsync(buffers[current], SocketFlags.None, ct);
            while (true)
            {
                int n = await pending;
                if (n == 0)
                {
                    return total;
                }
                var filled = buffers[current];
                // QEMU writes its stream in 32 KiB pieces: take what is already queued into the same record
                // (fewer, larger records: fewer seals and socket calls on both sides).
                while (n < filled.Length && conn.Available > 0)
                {
                    int more = conn.Receive(filled, n, Math.Min(filled.Length - n, conn.Available), SocketFlags.None);
                    if (more == 0)
                    {
                        break;
                    }
                    n += more;
                }
                current ^= 1;
                pending = conn.ReceiveAsync(buffers[current], SocketFlags.None, ct);
                await channel.SendAsync(FrameType.Stream, filled.AsMemory(0, n), ct);
                total += n;
            }
        }
        finally
        {
            foreach (var b in buffers)
            {
                CryptographicOperations.ZeroMemory(b); // guest RAM passed through here
            }
        }
    }

    private const int ReadSize = 512 * 1024;

    public static async Task<long> PumpInAsync(SecureChannel channel, Stream qemu, IReadOnlyList<IncomingFile> files, CancellationToken ct)
    {
        // QEMU takes one record's bytes while the next record is received and opened (a copy, since the channel reuses its buffer).
        byte[][] buffers = [new byte[SecureChannel.MaxRecord], new byte[SecureChannel.MaxRecord]];
        int next = 0;
        Task writing = Task.CompletedTask;
        long total = 0;
        try
        {
            return await Loop();
        }
        finally
        {
            try
            {
                await writing;
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
            {
                // the caller sees the failure that ended the loop
            }
            foreach (var b in buffers)
            {
                CryptographicOperations.ZeroMemory(b);
            }
        }

        async Task<long> Loop()
        {
            while (true)
            {
                var (type, payload) = await WithLimit(channel.ReceiveAsync, ct, TimeSpan.FromMinutes(5));
                switch (type)
                {
                    case FrameType.Stream:
                        await writing;
                        payload.CopyTo(buffers[next]);
                        writing = qemu.WriteAsync(buffers[next].AsMemory(0, payload.Length), ct).AsTask();
                        next ^= 1;
                        total += payload.Length;
                        break;
                    case FrameType.File:
                        WriteFilePiece(files, payload.Span);
                        break;
                    case FrameType.Control:
                        var message = System.Text.Json.JsonSerializer.Deserialize<JsonObject>(payload.Span) ?? new JsonObject();
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
                        await writing;
                        await qemu.FlushAsync(ct);
                        return total;
                }
            }
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

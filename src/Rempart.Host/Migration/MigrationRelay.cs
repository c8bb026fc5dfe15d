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
        var buffer = new byte[256 * 1024];
        long total = 0;
        try
        {
            while (true)
            {
                int n = await conn.ReceiveAsync(buffer, SocketFlags.None, ct);
                if (n == 0)
                {
                    return total;
                }
                await channel.SendAsync(FrameType.Stream, buffer.AsMemory(0, n), ct);
                total += n;
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(buffer); // guest RAM passed through here
        }
    }

    /// <summary>Stream records into QEMU, disk records into the files, until <c>stream-end</c>; answers the byte count.</summary>
    public static async Task<long> PumpInAsync(SecureChannel channel, Stream qemu, IReadOnlyList<IncomingFile> files, CancellationToken ct)
    {
        long total = 0;
        while (true)
        {
            var (type, payload) = await WithLimit(channel.ReceiveAsync, ct, TimeSpan.FromMinutes(5));
            switch (type)
            {
                case FrameType.Stream:
                    await qemu.WriteAsync(payload, ct);
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
                    await qemu.FlushAsync(ct);
                    return total;
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

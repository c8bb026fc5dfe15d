namespace Rempart.Host.Snapshots;

/// <summary>What a sealed stream holds, once written or verified.</summary>
/// <param name="Header">The header (authenticated once returned from a verify, open or restore).</param>
/// <param name="PlaintextLength">Bytes of plaintext (the migration stream).</param>
/// <param name="Chunks">Records, the final one included.</param>
/// <param name="SealedLength">Bytes of the sealed stream, header included.</param>
public sealed record SnapshotStreamInfo(SnapshotHeader Header, long PlaintextLength, long Chunks, long SealedLength);

/// <summary>
/// Seals and opens the memory/device state of a VM snapshot — QEMU's migration stream — in the format of
/// docs/snapshot-format.md: a header bound to the VM and snapshot, then AES-256-GCM records of a fixed
/// plaintext size, each bound to its index and to the header, the last one marked final.
/// Reading, crypto and writing overlap on three tasks with a few chunk-sized buffers
/// (<see cref="ChunkPipeline"/>), so a multi-GiB stream goes through in bounded memory.
/// </summary>
public static class SnapshotStream
{
    /// <summary>
    /// Seals everything <paramref name="source"/> yields until its end (e.g. the read end of the pipe QEMU
    /// migrates to) into <paramref name="destination"/>. Only when this returns is the stream complete: a
    /// sealed file cut short by a crash has no final record and is refused (<c>snapshot.truncated</c>).
    /// </summary>
    public static async Task<SnapshotStreamInfo> SealAsync(Stream source, Stream destination, SnapshotKey key,
        int chunkSize = SnapshotHeader.DefaultChunkSize, CancellationToken cancellationToken = default)
    {
        using var cipher = StreamCipher.Create(key, chunkSize, out var header);
        await destination.WriteAsync(header.Bytes, cancellationToken).ConfigureAwait(false);
        long index = 0, offset = header.Length, plaintext = 0;
        await ChunkPipeline.RunAsync(ChunkPipeline.DefaultSlots, chunkSize + SnapshotRecord.Overhead,
            fill: async (slot, ct) =>
            {
                int n = await source.ReadAtLeastAsync(slot.Buffer.AsMemory(SnapshotRecord.PrefixSize, chunkSize), chunkSize, throwOnEndOfStream: false, ct).ConfigureAwait(false);
                slot.Final = n < chunkSize;
                slot.Length = n + SnapshotRecord.Overhead;
                slot.Index = index++;
                slot.Offset = offset;
                offset += slot.Length;
                plaintext += n;
                return true;
            },
            transform: slot => cipher.SealChunk(slot.Index, slot.Final, slot.Buffer.AsSpan(0, slot.Length)),
            drain: (slot, ct) => destination.WriteAsync(slot.Buffer.AsMemory(0, slot.Length), ct),
            cancellationToken).ConfigureAwait(false);
        await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
        return new SnapshotStreamInfo(header, plaintext, index, offset);
    }

    /// <summary>
    /// Checks a whole sealed stream — header, every record, the final record, nothing after it — and
    /// releases nothing. Throws <see cref="SnapshotException"/> at the first fault.
    /// </summary>
    public static Task<SnapshotStreamInfo> VerifyAsync(Stream sealedStream, SnapshotKey key, CancellationToken cancellationToken = default) =>
        OpenCoreAsync(sealedStream, key, destination: null, expected: null, cancellationToken);

    /// <summary>
    /// Single pass: writes each chunk's plaintext to <paramref name="destination"/> as soon as that chunk
    /// authenticates. Only authentic bytes ever reach the destination, in order, but a stream cut short or
    /// changed further on is found only when it gets there: the destination may have received a prefix.
    /// For QEMU, which must get nothing from a tampered snapshot, use <see cref="RestoreAsync"/>.
    /// </summary>
    public static Task<SnapshotStreamInfo> OpenAsync(Stream sealedStream, SnapshotKey key, Stream destination, CancellationToken cancellationToken = default) =>
        OpenCoreAsync(sealedStream, key, destination, expected: null, cancellationToken);

    /// <summary>
    /// Restore: verifies the whole stream first (<see cref="VerifyAsync"/>), so a tampered, truncated or
    /// foreign snapshot is refused before any byte reaches <paramref name="destination"/>; then seeks back
    /// and decrypts into <paramref name="destination"/>, authenticating every chunk again and requiring the
    /// same header bytes, so a file changed between the two passes is still caught. A failure of the second
    /// pass is <c>snapshot.changed</c>: the destination got only authentic bytes but not all of them, and the
    /// caller must abort the consumer (cancel QEMU's incoming migration and stop that QEMU).
    /// </summary>
    public static async Task<SnapshotStreamInfo> RestoreAsync(Stream sealedStream, SnapshotKey key, Stream destination, CancellationToken cancellationToken = default)
    {
        if (!sealedStream.CanSeek)
        {
            throw new ArgumentException("a restore reads the sealed stream twice: it must be seekable (a file)", nameof(sealedStream));
        }
        long start = sealedStream.Position;
        var verified = await VerifyAsync(sealedStream, key, cancellationToken).ConfigureAwait(false);
        sealedStream.Position = start;
        try
        {
            return await OpenCoreAsync(sealedStream, key, destination, verified, cancellationToken).ConfigureAwait(false);
        }
        catch (SnapshotException e)
        {
            throw new SnapshotException(SnapshotException.Changed,
                $"the snapshot verified, then failed while being restored (changed between the two passes): {e.Id}: {e.Message}", e.Chunk, e.Offset, e);
        }
    }

    private static async Task<SnapshotStreamInfo> OpenCoreAsync(Stream source, SnapshotKey key, Stream? destination, SnapshotStreamInfo? expected, CancellationToken cancellationToken)
    {
        var header = await SnapshotHeader.ReadAsync(source, cancellationToken).ConfigureAwait(false);
        if (expected is not null && !header.Bytes.AsSpan().SequenceEqual(expected.Header.Bytes))
        {
            throw new SnapshotException(SnapshotException.Tampered, "the snapshot header is not the one verified in the first pass", offset: 0);
        }
        using var cipher = StreamCipher.Open(key, header);
        int chunkSize = header.ChunkSize;
        long index = 0, offset = header.Length, plaintext = 0;
        var probe = new byte[1];
        // Verifying only: each record is read behind room for the padded associated data, and its tag is
        // computed without decrypting it (StreamCipher.VerifyChunk); nothing is decrypted, nothing written.
        int room = destination is null ? StreamCipher.VerifyHeadroom : 0;
        await ChunkPipeline.RunAsync(ChunkPipeline.DefaultSlots, room + chunkSize + SnapshotRecord.Overhead,
            fill: async (slot, ct) =>
            {
                var prefix = slot.Buffer.AsMemory(room, SnapshotRecord.PrefixSize);
                int got = await source.ReadAtLeastAsync(prefix, prefix.Length, throwOnEndOfStream: false, ct).ConfigureAwait(false);
                if (got < prefix.Length)
                {
                    throw SnapshotRecord.Truncated(index, offset + got, got == 0 ? "with no final record: nothing where there should be" : "inside the prefix of");
                }
                int length = SnapshotRecord.Length(prefix.Span, chunkSize, index, offset, out bool final);
                var rest = slot.Buffer.AsMemory(room + SnapshotRecord.PrefixSize, length - SnapshotRecord.PrefixSize);
                got = await source.ReadAtLeastAsync(rest, rest.Length, throwOnEndOfStream: false, ct).ConfigureAwait(false);
                if (got < rest.Length)
                {
                    throw SnapshotRecord.Truncated(index, offset + SnapshotRecord.PrefixSize + got, "inside");
                }
                if (final && await source.ReadAsync(probe, ct).ConfigureAwait(false) > 0)
                {
                    throw SnapshotRecord.Trailing(index, offset + length);
                }
                slot.Final = final;
                slot.Length = length;
                slot.Index = index++;
                slot.Offset = offset;
                offset += length;
                plaintext += length - SnapshotRecord.Overhead;
                return true;
            },
            transform: slot =>
            {
                if (destination is null)
                {
                    cipher.VerifyChunk(slot.Index, slot.Buffer.AsSpan(0, room + slot.Length), slot.Offset);
                }
                else
                {
                    cipher.OpenChunk(slot.Index, slot.Buffer.AsSpan(0, slot.Length), slot.Offset);
                }
            },
            drain: (slot, ct) => destination is null
                ? ValueTask.CompletedTask
                : destination.WriteAsync(slot.Buffer.AsMemory(SnapshotRecord.PrefixSize, slot.Length - SnapshotRecord.Overhead), ct),
            cancellationToken).ConfigureAwait(false);
        if (destination is not null)
        {
            await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        var info = new SnapshotStreamInfo(header, plaintext, index, offset);
        if (expected is not null && (info.Chunks != expected.Chunks || info.SealedLength != expected.SealedLength))
        {
            throw new SnapshotException(SnapshotException.Tampered, $"the snapshot has {info.Chunks} chunks, {expected.Chunks} in the first pass", offset: offset);
        }
        return info;
    }
}

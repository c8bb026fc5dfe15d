using System.Runtime.ExceptionServices;
using System.Security.Cryptography;
using System.Threading.Channels;

namespace Rempart.Host.Snapshots;

/// <summary>One buffer of the pipeline: a whole record (prefix ‖ body ‖ tag) and where it belongs.</summary>
internal sealed class ChunkSlot(int capacity)
{
    public byte[] Buffer { get; } = new byte[capacity];

    /// <summary>Bytes of <see cref="Buffer"/> in use (the whole record).</summary>
    public int Length { get; set; }

    public long Index { get; set; }

    /// <summary>The record's offset in the sealed stream.</summary>
    public long Offset { get; set; }

    public bool Final { get; set; }
}

/// <summary>
/// Three stages on their own tasks — fill (read), transform (AES-GCM in place), drain (write) — passing a
/// fixed set of buffers around in order, so reading, crypto and writing overlap with bounded memory
/// (slots × slot size) and no buffer allocated per chunk. The first failure of any stage cancels the
/// others and is rethrown once all have stopped; every buffer is wiped at the end (they held plaintext).
/// </summary>
internal static class ChunkPipeline
{
    public const int DefaultSlots = 4;

    /// <summary>
    /// Runs <paramref name="fill"/> (false when there is nothing more; the slot marked final is the last one
    /// filled), <paramref name="transform"/> and <paramref name="drain"/> over <paramref name="slots"/> buffers of
    /// <paramref name="slotSize"/> bytes, until the end, the first failure or <paramref name="cancellationToken"/>.
    /// </summary>
    public static async Task RunAsync(
        int slots,
        int slotSize,
        Func<ChunkSlot, CancellationToken, ValueTask<bool>> fill,
        Action<ChunkSlot> transform,
        Func<ChunkSlot, CancellationToken, ValueTask> drain,
        CancellationToken cancellationToken)
    {
        var buffers = new ChunkSlot[slots];
        var options = new BoundedChannelOptions(slots) { SingleReader = true, SingleWriter = true };
        var free = Channel.CreateBounded<ChunkSlot>(options);
        var filled = Channel.CreateBounded<ChunkSlot>(options);
        var done = Channel.CreateBounded<ChunkSlot>(options);
        Exception? first = null;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var token = cts.Token;

        void Fail(Exception e)
        {
            if (Interlocked.CompareExchange(ref first, e, null) is null)
            {
                cts.Cancel();
            }
        }

        try
        {
            for (int i = 0; i < slots; i++)
            {
                buffers[i] = new ChunkSlot(slotSize);
                free.Writer.TryWrite(buffers[i]);
            }
            var producer = Task.Run(async () =>
            {
                try
                {
                    while (true)
                    {
                        var slot = await free.Reader.ReadAsync(token).ConfigureAwait(false);
                        if (!await fill(slot, token).ConfigureAwait(false))
                        {
                            break;
                        }
                        await filled.Writer.WriteAsync(slot, token).ConfigureAwait(false);
                        if (slot.Final)
                        {
                            break;
                        }
                    }
                }
                catch (Exception e)
                {
                    Fail(e);
                }
                finally
                {
                    filled.Writer.TryComplete();
                }
            }, CancellationToken.None);
            var transformer = Task.Run(async () =>
            {
                try
                {
                    await foreach (var slot in filled.Reader.ReadAllAsync(token).ConfigureAwait(false))
                    {
                        transform(slot);
                        await done.Writer.WriteAsync(slot, token).ConfigureAwait(false);
                    }
                }
                catch (Exception e)
                {
                    Fail(e);
                }
                finally
                {
                    done.Writer.TryComplete();
                }
            }, CancellationToken.None);
            var drainer = Task.Run(async () =>
            {
                try
                {
                    await foreach (var slot in done.Reader.ReadAllAsync(token).ConfigureAwait(false))
                    {
                        await drain(slot, token).ConfigureAwait(false);
                        await free.Writer.WriteAsync(slot, token).ConfigureAwait(false);
                    }
                }
                catch (Exception e)
                {
                    Fail(e);
                }
            }, CancellationToken.None);
            await Task.WhenAll(producer, transformer, drainer).ConfigureAwait(false);
            if (first is not null)
            {
                ExceptionDispatchInfo.Throw(first);
            }
        }
        finally
        {
            foreach (var b in buffers)
            {
                if (b is not null)
                {
                    CryptographicOperations.ZeroMemory(b.Buffer);
                }
            }
        }
    }
}

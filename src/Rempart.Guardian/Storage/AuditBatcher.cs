using System.Threading.Channels;

namespace Rempart.Guardian.Storage;

/// <summary>An audit record to append: what <see cref="IGuardianStore.AppendAuditAsync"/> takes.</summary>
public sealed record AuditEntry(string Kind, string Subject, string DataJson, DateTimeOffset At);

/// <summary>
/// Group commit for the audit chain. Appends serialise on one lock (the chain has one head), so
/// under load each append waited for every append before it to take the lock, read the head,
/// insert and commit. Here appends that arrive while a batch is being written queue, and the next
/// batch appends them all under one lock acquisition, in arrival order, in one transaction: the
/// chain is the same record by record, every caller still gets its own record back only after the
/// commit, and a failed batch fails each of its callers (nothing of it is stored).
/// </summary>
internal sealed class AuditBatcher : IAsyncDisposable
{
    private readonly Func<IReadOnlyList<AuditEntry>, Task<IReadOnlyList<AuditRecord>>> _appendBatch;
    private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _writer;

    /// <param name="appendBatch">Appends 1 to <see cref="StoreSql.MaxAuditBatch"/> entries atomically, under the chain's lock.</param>
    public AuditBatcher(Func<IReadOnlyList<AuditEntry>, Task<IReadOnlyList<AuditRecord>>> appendBatch)
    {
        _appendBatch = appendBatch;
        _writer = Task.Run(WriteAsync);
    }

    public Task<AuditRecord> AppendAsync(AuditEntry entry, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        var pending = new Pending(entry, ct);
        if (!_queue.Writer.TryWrite(pending))
        {
            throw new ObjectDisposedException(nameof(AuditBatcher));
        }
        return pending.Done.Task;
    }

    private async Task WriteAsync()
    {
        var batch = new List<Pending>(StoreSql.MaxAuditBatch);
        while (await _queue.Reader.WaitToReadAsync())
        {
            batch.Clear();
            while (batch.Count < StoreSql.MaxAuditBatch && _queue.Reader.TryRead(out var p))
            {
                // A caller that gave up before its record was written gets no record.
                if (p.Cancellation.IsCancellationRequested)
                {
                    p.Done.TrySetCanceled(p.Cancellation);
                    continue;
                }
                batch.Add(p);
            }
            if (batch.Count == 0)
            {
                continue;
            }
            try
            {
                var records = await _appendBatch(batch.Select(p => p.Entry).ToList());
                for (int i = 0; i < batch.Count; i++)
                {
                    batch[i].Done.TrySetResult(records[i]);
                }
            }
            catch (Exception e)
            {
                foreach (var p in batch)
                {
                    p.Done.TrySetException(e);
                }
            }
        }
    }

    /// <summary>Appends already queued are still written.</summary>
    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _writer;
    }

    private sealed record Pending(AuditEntry Entry, CancellationToken Cancellation)
    {
        public TaskCompletionSource<AuditRecord> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}

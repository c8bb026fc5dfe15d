using System.Threading.Channels;

namespace Rempart.Guardian.Storage;

/// <summary>An audit record to append: what <see cref="IGuardianStore.AppendAuditAsync"/> takes.</summary>
public sealed record AuditEntry(string Kind, string Subject, string DataJson, DateTimeOffset At);

/// <summary>What an affirmed attestation writes besides its audit records: see <see cref="IGuardianStore.RecordAttestationAsync(HostRecord, IssuedTokenRecord, EvidenceRecord, IReadOnlyList{AuditEntry}, CancellationToken)"/>.</summary>
public sealed record AttestationWrite(HostRecord Host, IssuedTokenRecord Token, EvidenceRecord Evidence);

/// <summary>One caller's share of a batch: its audit records, in order, and the attestation they record, if any.</summary>
internal sealed record AuditWork(IReadOnlyList<AuditEntry> Entries, AttestationWrite? Attestation);

/// <summary>
/// Group commit for the audit chain. Appends serialise on one lock (the chain has one head), so
/// under load each append waited for every append before it to take the lock, read the head,
/// insert and commit. Here appends that arrive while a batch is being written queue, and the next
/// batch appends them all under one lock acquisition, in arrival order, in one transaction: the
/// chain is the same record by record, every caller still gets its own records back only after the
/// commit, and a failed batch fails each of its callers (nothing of it is stored). An attestation's
/// writes (host, token, evidence) ride in the same transaction as its audit records, so one commit
/// makes a whole batch of attestations durable. When a batch fails with an error from the database,
/// each of its callers is tried again alone, so that one bad write fails only its own caller.
/// </summary>
internal sealed class AuditBatcher : IAsyncDisposable
{
    private readonly Func<IReadOnlyList<AuditWork>, Task<IReadOnlyList<AuditRecord>>> _appendBatch;
    private readonly Func<Exception, bool> _retryAlone;
    private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _writer;

    /// <param name="appendBatch">
    /// Writes 1 to <see cref="StoreSql.MaxAuditBatch"/> entries (and the attestations of their work)
    /// atomically, under the chain's lock; returns the records of every entry, in order.
    /// </param>
    /// <param name="retryAlone">Whether a batch that failed with this error stored nothing and may be retried caller by caller.</param>
    public AuditBatcher(Func<IReadOnlyList<AuditWork>, Task<IReadOnlyList<AuditRecord>>> appendBatch, Func<Exception, bool> retryAlone)
    {
        _appendBatch = appendBatch;
        _retryAlone = retryAlone;
        _writer = Task.Run(WriteAsync);
    }

    public async Task<AuditRecord> AppendAsync(AuditEntry entry, CancellationToken ct) =>
        (await AppendAsync(new AuditWork([entry], null), ct))[0];

    /// <summary>Completes, with the work's records in order, once they and its attestation are committed.</summary>
    public Task<IReadOnlyList<AuditRecord>> AppendAsync(AuditWork work, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        ArgumentOutOfRangeException.ThrowIfZero(work.Entries.Count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(work.Entries.Count, StoreSql.MaxAuditBatch);
        var pending = new Pending(work, ct);
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
            int entries = 0;
            while (_queue.Reader.TryPeek(out var next) && entries + next.Work.Entries.Count <= StoreSql.MaxAuditBatch
                && _queue.Reader.TryRead(out var p))
            {
                // A caller that gave up before its records were written gets no record (nor its attestation written).
                if (p.Cancellation.IsCancellationRequested)
                {
                    p.Done.TrySetCanceled(p.Cancellation);
                    continue;
                }
                batch.Add(p);
                entries += p.Work.Entries.Count;
            }
            if (batch.Count == 0)
            {
                continue;
            }
            try
            {
                Complete(batch, await _appendBatch(batch.Select(p => p.Work).ToList()));
            }
            catch (Exception e) when (batch.Count > 1 && _retryAlone(e))
            {
                foreach (var p in batch)
                {
                    try
                    {
                        Complete([p], await _appendBatch([p.Work]));
                    }
                    catch (Exception alone)
                    {
                        p.Done.TrySetException(alone);
                    }
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

    private static void Complete(IReadOnlyList<Pending> batch, IReadOnlyList<AuditRecord> records)
    {
        int at = 0;
        foreach (var p in batch)
        {
            int n = p.Work.Entries.Count;
            p.Done.TrySetResult(records.Skip(at).Take(n).ToArray());
            at += n;
        }
    }

    /// <summary>Appends already queued are still written.</summary>
    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _writer;
    }

    private sealed record Pending(AuditWork Work, CancellationToken Cancellation)
    {
        public TaskCompletionSource<IReadOnlyList<AuditRecord>> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}

namespace Rempart.Host.Vm;

/// <summary>Independent pieces of work run at the same time, where the first failure stops the others.</summary>
internal static class ParallelWork
{
    /// <summary>
    /// Starts every piece with a token that fires when <paramref name="ct"/> does or when any piece
    /// fails, waits for all of them, then rethrows the cause: the first failure that is not a
    /// cancellation it set off in the others (or <see cref="OperationCanceledException"/> when
    /// <paramref name="ct"/> fired).
    /// </summary>
    public static async Task AllAsync(IEnumerable<Func<CancellationToken, Task>> pieces, CancellationToken ct)
    {
        using var failed = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var tasks = pieces.Select(piece => Task.Run(async () =>
        {
            try
            {
                await piece(failed.Token).ConfigureAwait(false);
            }
            catch
            {
                await failed.CancelAsync().ConfigureAwait(false);
                throw;
            }
        }, CancellationToken.None)).ToArray();
        await Task.WhenAll(tasks).ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default).ConfigureAwait(false);
        ct.ThrowIfCancellationRequested();
        var cause = tasks.Where(t => t.IsFaulted).Select(t => t.Exception!.InnerException!).OrderBy(e => e is OperationCanceledException).FirstOrDefault();
        if (cause is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(cause);
        }
        await Task.WhenAll(tasks).ConfigureAwait(false); // only cancellations left: rethrows one
    }
}

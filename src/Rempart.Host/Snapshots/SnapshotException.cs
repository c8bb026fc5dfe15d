namespace Rempart.Host.Snapshots;

/// <summary>
/// A sealed snapshot stream was refused, or could not be written. <see cref="Id"/> is stable
/// (docs/snapshot-format.md, "Failure ids"):
/// <list type="bullet">
/// <item><c>snapshot.format</c> — a header field or a record prefix breaks the format's rules;</item>
/// <item><c>snapshot.wrong-vm</c>, <c>snapshot.wrong-snapshot</c> — the header names another VM or snapshot;</item>
/// <item><c>snapshot.tampered</c> — the header or a chunk does not authenticate (changed, moved, spliced, or not this VM's key);</item>
/// <item><c>snapshot.truncated</c> — the stream ends inside the header or a record, or before the final record;</item>
/// <item><c>snapshot.trailing</c> — bytes follow the final record;</item>
/// <item><c>snapshot.changed</c> — the file verified, then failed while being fed to its consumer
/// (it changed between the two passes of a restore): the consumer got only authentic bytes, but not all of
/// them, and must be aborted (<see cref="Exception.InnerException"/> is the failure of the second pass).</item>
/// </list>
/// <see cref="Chunk"/> and <see cref="Offset"/> say where (the record index, and the byte offset in the sealed
/// stream), when the failure is at a place. Messages never contain key material or plaintext.
/// </summary>
public sealed class SnapshotException(string id, string message, long? chunk = null, long? offset = null, Exception? inner = null)
    : Exception(message, inner)
{
    public const string Format = "snapshot.format";
    public const string WrongVm = "snapshot.wrong-vm";
    public const string WrongSnapshot = "snapshot.wrong-snapshot";
    public const string Tampered = "snapshot.tampered";
    public const string Truncated = "snapshot.truncated";
    public const string Trailing = "snapshot.trailing";
    public const string Changed = "snapshot.changed";

    public string Id { get; } = id;

    /// <summary>The index of the record at fault (0 = first chunk), if any.</summary>
    public long? Chunk { get; } = chunk;

    /// <summary>The byte offset in the sealed stream where the fault was found, if any.</summary>
    public long? Offset { get; } = offset;

    public override string ToString() => $"{Id}: {base.ToString()}";
}

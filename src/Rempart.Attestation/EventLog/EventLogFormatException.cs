namespace Rempart.Attestation.EventLog;

/// <summary>
/// The one exception a malformed event log (or malformed event data being decoded) produces:
/// the byte offset in the log and what was expected there.
/// </summary>
public sealed class EventLogFormatException : FormatException
{
    public EventLogFormatException(long offset, string expected)
        : base($"malformed TCG event log at offset {offset}: expected {expected}")
    {
        Offset = offset;
        Expected = expected;
    }

    public long Offset { get; }

    public string Expected { get; }
}

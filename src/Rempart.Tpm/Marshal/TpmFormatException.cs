namespace Rempart.Tpm.Marshal;

/// <summary>
/// The one exception a malformed TPM buffer produces: it names the byte offset where
/// reading failed and what the reader expected there. Nothing else escapes a parser.
/// </summary>
public sealed class TpmFormatException : FormatException
{
    public TpmFormatException(int offset, string expected)
        : base($"malformed TPM structure at offset {offset}: expected {expected}")
    {
        Offset = offset;
        Expected = expected;
    }

    /// <summary>Offset, in bytes from the start of the buffer being read, of the failure.</summary>
    public int Offset { get; }

    /// <summary>What the reader expected to find at <see cref="Offset"/>.</summary>
    public string Expected { get; }
}

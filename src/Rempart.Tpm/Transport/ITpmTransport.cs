namespace Rempart.Tpm.Transport;

/// <summary>
/// One way to reach a TPM: send a complete command buffer, receive the complete response
/// buffer (TPM 2.0 Library Part 3, §5: command and response structure). Implementations
/// are not thread-safe; one command is in flight at a time.
/// </summary>
public interface ITpmTransport : IDisposable
{
    /// <summary>Human-readable address, never containing secrets.</summary>
    string Address { get; }

    byte[] Transmit(ReadOnlySpan<byte> command);
}

/// <summary>A transport failure: the TPM could not be reached or answered with a broken frame.</summary>
public sealed class TpmTransportException : IOException
{
    public TpmTransportException(string message, Exception? inner = null) : base(message, inner)
    {
    }
}

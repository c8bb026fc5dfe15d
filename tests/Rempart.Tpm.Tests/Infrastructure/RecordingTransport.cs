using Rempart.Tpm.Transport;

namespace Rempart.Tpm.Tests.Infrastructure;

/// <summary>Wraps a real transport and keeps every command and response that crossed it (the "bus").</summary>
public sealed class RecordingTransport(ITpmTransport inner) : ITpmTransport
{
    public List<(byte[] Command, byte[] Response)> Exchanges { get; } = [];

    public string Address => inner.Address;

    public byte[] Transmit(ReadOnlySpan<byte> command)
    {
        var cmd = command.ToArray();
        var rsp = inner.Transmit(command);
        Exchanges.Add((cmd, rsp));
        return rsp;
    }

    public void Dispose() => inner.Dispose();
}

/// <summary>Answers each command with the next recorded (possibly mutated) response: a fake TPM peer.</summary>
public sealed class ReplayTransport(IEnumerable<byte[]> responses) : ITpmTransport
{
    private readonly Queue<byte[]> _responses = new(responses);

    public string Address => "replay";

    public byte[] Transmit(ReadOnlySpan<byte> command) =>
        _responses.Count > 0 ? _responses.Dequeue() : throw new TpmTransportException("replay: no more responses");

    public void Dispose()
    {
    }
}

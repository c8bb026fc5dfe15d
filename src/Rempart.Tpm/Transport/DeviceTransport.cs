namespace Rempart.Tpm.Transport;

/// <summary>
/// The Linux TPM character device (/dev/tpmrm0, the kernel's resource manager; or /dev/tpm0):
/// write one command, read one response.
/// </summary>
public sealed class DeviceTransport : ITpmTransport
{
    private const int MaxResponse = 4096;
    private readonly FileStream _stream;

    public DeviceTransport(string path)
    {
        Address = "device:" + path;
        try
        {
            _stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, bufferSize: 0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TpmTransportException($"cannot open TPM device {path}: {e.Message}", e);
        }
    }

    public string Address { get; }

    public byte[] Transmit(ReadOnlySpan<byte> command)
    {
        try
        {
            _stream.Write(command);
            var buffer = new byte[MaxResponse];
            int n = _stream.Read(buffer);
            if (n < 10)
            {
                throw new TpmTransportException($"{Address}: short response ({n} bytes)");
            }
            return buffer.AsSpan(0, n).ToArray();
        }
        catch (IOException e) when (e is not TpmTransportException)
        {
            throw new TpmTransportException($"{Address}: {e.Message}", e);
        }
    }

    public void Dispose() => _stream.Dispose();
}

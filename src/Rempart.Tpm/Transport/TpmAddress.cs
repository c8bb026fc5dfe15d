namespace Rempart.Tpm.Transport;

/// <summary>
/// A TPM address as the CLI and configuration files spell it:
/// <c>device:/dev/tpmrm0</c>, <c>swtpm:tcp:HOST:PORT</c> (control channel at PORT+1, the
/// convention of swtpm and tpm2-tss's swtpm TCTI), or <c>swtpm:unix:PATH</c> (control
/// channel at PATH.ctrl when present).
/// </summary>
public sealed record TpmAddress(string Kind, string Host, int Port, string Path)
{
    public static TpmAddress Parse(string text)
    {
        if (text.StartsWith("device:", StringComparison.Ordinal) && text.Length > 7)
        {
            return new TpmAddress("device", "", 0, text[7..]);
        }
        if (text.StartsWith("swtpm:unix:", StringComparison.Ordinal) && text.Length > 11)
        {
            return new TpmAddress("unix", "", 0, text[11..]);
        }
        if (text.StartsWith("swtpm:tcp:", StringComparison.Ordinal))
        {
            var rest = text[10..];
            int colon = rest.LastIndexOf(':');
            if (colon > 0 && int.TryParse(rest[(colon + 1)..], out int port) && port is > 0 and < 65535)
            {
                return new TpmAddress("tcp", rest[..colon].Trim('[', ']'), port, "");
            }
        }
        throw new FormatException(
            $"TPM address '{text}' not understood: use device:/dev/tpmrm0, swtpm:tcp:HOST:PORT or swtpm:unix:PATH");
    }

    public ITpmTransport Open() => Kind switch
    {
        "device" => new DeviceTransport(Path),
        "unix" => SwtpmTransport.ConnectUnix(Path),
        _ => SwtpmTransport.ConnectTcp(Host, Port),
    };

    /// <summary>The swtpm control channel, when this address has one.</summary>
    public SwtpmControl? OpenControl() => Kind switch
    {
        "tcp" => SwtpmControl.ConnectTcp(Host, Port + 1),
        "unix" when File.Exists(Path + ".ctrl") || Directory.Exists(Path + ".ctrl") => SwtpmControl.ConnectUnix(Path + ".ctrl"),
        _ => null,
    };

    public override string ToString() => Kind switch
    {
        "device" => "device:" + Path,
        "unix" => "swtpm:unix:" + Path,
        _ => $"swtpm:tcp:{Host}:{Port}",
    };
}

using System.Buffers.Binary;
using System.Text;
using Rempart.Tpm;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Transport;

namespace Rempart.Host.Tests.Infrastructure;

/// <summary>
/// A real TPM transport with a concurrent measurer in front of it: before each TPM2_Quote,
/// until <c>times</c> quotes have executed, it extends PCR 16 in the sha1 and sha256 banks, as
/// another process extending PCRs between the collector's PCR_Read and its Quote would.
/// (libtpms may answer a Quote with TPM_RC_RETRY, which the client sends again: only executed
/// quotes count, every extend does.)
/// </summary>
public sealed class ExtendBeforeQuote(ITpmTransport inner, int times) : ITpmTransport
{
    private static readonly byte[] Event = Encoding.ASCII.GetBytes("concurrent event");

    /// <summary>Quote commands the TPM executed.</summary>
    public int Quotes { get; private set; }

    /// <summary>PCR 16 extends done.</summary>
    public int Extends { get; private set; }

    public string Address => inner.Address;

    public static byte[] Digest(TpmAlgId bank) => TpmHash.Hash(bank, Event);

    public byte[] Transmit(ReadOnlySpan<byte> command)
    {
        if (command.Length < 10 || BinaryPrimitives.ReadUInt32BigEndian(command[6..]) != (uint)TpmCc.Quote)
        {
            return inner.Transmit(command);
        }
        var copy = command.ToArray();
        if (Quotes < times)
        {
            using var side = new TpmClient(inner, ownsTransport: false);
            side.PcrExtend(16, new TpmlDigestValues([new TpmtHa(TpmAlgId.Sha1, Digest(TpmAlgId.Sha1)), new TpmtHa(TpmAlgId.Sha256, Digest(TpmAlgId.Sha256))]));
            Extends++;
        }
        var response = inner.Transmit(copy);
        if (response.Length >= 10 && BinaryPrimitives.ReadUInt32BigEndian(response.AsSpan(6)) == TpmRc.Success)
        {
            Quotes++;
        }
        return response;
    }

    public void Dispose() => inner.Dispose();
}

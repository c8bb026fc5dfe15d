using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm;

/// <summary>
/// File formats of tpm2-tools that are not plain TPM structures. The credential file of
/// tpm2_makecredential / tpm2_activatecredential is a header (UINT32 magic 0xBADCC0DE, UINT32
/// version 1, big-endian) followed by TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET.
/// </summary>
public static class Tpm2ToolsFiles
{
    public const uint CredentialMagic = 0xBADCC0DE;

    public static byte[] WriteCredential(Tpm2bIdObject blob, Tpm2bEncryptedSecret secret)
    {
        var w = new TpmWriter();
        w.WriteUInt32(CredentialMagic).WriteUInt32(1);
        blob.Write(w);
        secret.Write(w);
        return w.ToArray();
    }

    public static (Tpm2bIdObject Blob, Tpm2bEncryptedSecret Secret) ReadCredential(ReadOnlySpan<byte> file)
    {
        var r = new TpmReader(file);
        uint magic = r.ReadUInt32("credential file magic");
        if (magic != CredentialMagic)
        {
            throw new TpmFormatException(0, $"credential file magic 0xBADCC0DE (got 0x{magic:x8})");
        }
        uint version = r.ReadUInt32("credential file version");
        if (version != 1)
        {
            throw new TpmFormatException(4, $"credential file version 1 (got {version})");
        }
        var blob = Tpm2bIdObject.Read(ref r);
        var secret = Tpm2bEncryptedSecret.Read(ref r);
        r.ExpectEnd("credential file");
        return (blob, secret);
    }
}

using Rempart.Tpm.Marshal;
using Rempart.Tpm.Sessions;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm;

/// <summary>Part 3, §31 (Non-volatile Storage).</summary>
public sealed partial class TpmClient
{
    /// <summary>TPM2_NV_ReadPublic (Part 3, §31.6). The Name is checked against the public area.</summary>
    public (TpmsNvPublic Public, byte[] Name) NvReadPublic(uint index)
    {
        // No parameter encryption: the public area is not secret, and the command's cpHash
        // would need the very Name being read. A substituted Name fails every later HMAC.
        var r = Execute(TpmCc.NvReadPublic, [new TpmHandle(index)], 0, null, [], 0, out _);
        int nameAlgAt = r.Offset + 6; // TPM2B_NV_PUBLIC.size, nvIndex, nameAlg
        var pub = TpmsNvPublic.ReadSized(ref r);
        if (!TpmHash.Computable(pub.NameAlg))
        {
            throw new TpmFormatException(nameAlgAt, $"a nameAlg whose Name can be checked (got 0x{(ushort)pub.NameAlg:x4})");
        }
        var name = r.ReadSized("TPM2B_NAME", TpmsAttest.MaxNameSize);
        r.ExpectEnd("NV_ReadPublic response");
        if (!name.AsSpan().SequenceEqual(pub.Name()) || pub.NvIndex != index)
        {
            throw new TpmFormatException(r.Offset, $"an NV public area and Name for index 0x{index:x8}");
        }
        return (pub, name);
    }

    /// <summary>
    /// TPM2_NV_Read (Part 3, §31.13), in chunks of at most <paramref name="chunk"/> bytes
    /// (TPM_PT_NV_BUFFER_MAX; 512 is safe on every TPM we know). Authorised by the index
    /// itself (authHandle = index) unless <paramref name="authHandle"/> names the owner.
    /// </summary>
    public byte[] NvRead(uint index, TpmHandle? authHandle = null, TpmSession? auth = null, int chunk = 512)
    {
        var (pub, name) = NvReadPublic(index);
        var nv = new TpmHandle(index, name, authHandle?.Value == index ? authHandle.Auth : null);
        var authH = authHandle is null || authHandle.Value == index ? nv : authHandle;
        var result = new byte[pub.DataSize];
        int offset = 0;
        while (offset < result.Length)
        {
            int n = Math.Min(chunk, result.Length - offset);
            var w = new TpmWriter().WriteUInt16((ushort)n).WriteUInt16((ushort)offset);
            var r = Execute(TpmCc.NvRead, [authH, nv], 1, [auth], w.ToArray(), 0, out _, responseParamEncryptable: true);
            var data = r.ReadSized("TPM2B_MAX_NV_BUFFER", 2048);
            r.ExpectEnd("NV_Read response");
            if (data.Length != n)
            {
                throw new TpmFormatException(r.Offset, $"{n} bytes of NV data (got {data.Length})");
            }
            data.CopyTo(result, offset);
            offset += n;
        }
        return result;
    }

    /// <summary>TPM2_NV_DefineSpace (Part 3, §31.3). <paramref name="indexAuth"/> is a secret: use parameter encryption.</summary>
    public TpmHandle NvDefineSpace(TpmHandle authHandle, byte[] indexAuth, TpmsNvPublic pub, TpmSession? auth = null)
    {
        var w = new TpmWriter();
        w.WriteSized(indexAuth);
        pub.WriteSized(w);
        Execute(TpmCc.NvDefineSpace, [authHandle], 1, [auth], w.ToArray(), 0, out _, commandParamEncryptable: true);
        w.Clear();
        return new TpmHandle(pub.NvIndex, pub.Name(), indexAuth);
    }

    /// <summary>
    /// TPM2_NV_Write (Part 3, §31.7), in chunks. <paramref name="authHandle"/> is the owner or
    /// platform, or the index itself (its handle value, with the index's auth).
    /// </summary>
    public void NvWrite(TpmHandle authHandle, uint index, byte[] data, ushort offset = 0, TpmSession? auth = null, int chunk = 512)
    {
        int done = 0;
        while (done < data.Length)
        {
            // The Name changes once TPMA_NV_WRITTEN is set, so read it before each chunk.
            var nv = new TpmHandle(index, NvReadPublic(index).Name, authHandle.Value == index ? authHandle.Auth : null);
            var authH = authHandle.Value == index ? nv : authHandle;
            int n = Math.Min(chunk, data.Length - done);
            var w = new TpmWriter();
            w.WriteSized(data.AsSpan(done, n)).WriteUInt16((ushort)(offset + done));
            Execute(TpmCc.NvWrite, [authH, nv], 1, [auth], w.ToArray(), 0, out _, commandParamEncryptable: true);
            w.Clear();
            done += n;
        }
    }

    /// <summary>TPM2_NV_UndefineSpace (Part 3, §31.4).</summary>
    public void NvUndefineSpace(TpmHandle authHandle, uint index, TpmSession? auth = null)
    {
        var nv = new TpmHandle(index, NvReadPublic(index).Name);
        Execute(TpmCc.NvUndefineSpace, [authHandle, nv], 1, [auth], [], 0, out _);
    }
}

using Rempart.Tpm.Marshal;
using Rempart.Tpm.Sessions;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm;

/// <summary>Part 3, §12 (Object Commands), §24 (Hierarchy Commands: CreatePrimary).</summary>
public sealed partial class TpmClient
{
    /// <summary>
    /// TPM2_CreatePrimary (Part 3, §24.1). The returned handle carries the object's Name and
    /// <paramref name="sensitive"/>'s authValue, ready to authorise later commands.
    /// </summary>
    public CreatedObject CreatePrimary(TpmHandle hierarchy, TpmtPublic template, TpmsSensitiveCreate? sensitive = null, TpmSession? auth = null)
    {
        var w = new TpmWriter();
        (sensitive ?? TpmsSensitiveCreate.Empty).WriteSized(w);
        template.WriteSized(w);
        w.WriteSized([]);
        TpmlPcrSelection.Empty.Write(w);
        var r = Execute(TpmCc.CreatePrimary, [hierarchy], 1, [auth], w.ToArray(), 1, out var handles, commandParamEncryptable: true, responseParamEncryptable: true);
        w.Clear();
        var pub = TpmtPublic.ReadSized(ref r);
        var creation = ReadCreation(ref r);
        var name = r.ReadSized("TPM2B_NAME", TpmsAttest.MaxNameSize);
        r.ExpectEnd("CreatePrimary response");
        return new CreatedObject(new TpmHandle(handles[0], name, sensitive?.UserAuth), pub, [], creation);
    }

    /// <summary>TPM2_Create (Part 3, §12.1): a new object under a loaded parent; load it with <see cref="Load"/>.</summary>
    public CreatedObject Create(TpmHandle parent, TpmtPublic template, TpmsSensitiveCreate? sensitive = null, TpmSession? auth = null)
    {
        var w = new TpmWriter();
        (sensitive ?? TpmsSensitiveCreate.Empty).WriteSized(w);
        template.WriteSized(w);
        w.WriteSized([]);
        TpmlPcrSelection.Empty.Write(w);
        var r = Execute(TpmCc.Create, [parent], 1, [auth], w.ToArray(), 0, out _, commandParamEncryptable: true, responseParamEncryptable: true);
        w.Clear();
        var priv = r.ReadSized("TPM2B_PRIVATE", 2048);
        var pub = TpmtPublic.ReadSized(ref r);
        var creation = ReadCreation(ref r);
        r.ExpectEnd("Create response");
        return new CreatedObject(null, pub, priv, creation);
    }

    private static CreationEvidence ReadCreation(ref TpmReader r)
    {
        var data = r.ReadSized("TPM2B_CREATION_DATA", 4096);
        var hash = r.ReadSized("TPM2B_DIGEST creationHash", TpmConstants.MaxDigestSize);
        var ticket = TpmtTicket.Read(ref r, TpmSt.Creation);
        return new CreationEvidence(data, hash, ticket);
    }

    /// <summary>TPM2_Load (Part 3, §12.2).</summary>
    public TpmHandle Load(TpmHandle parent, byte[] inPrivate, TpmtPublic inPublic, byte[]? objectAuth = null, TpmSession? auth = null)
    {
        var w = new TpmWriter();
        w.WriteSized(inPrivate);
        inPublic.WriteSized(w);
        var r = Execute(TpmCc.Load, [parent], 1, [auth], w.ToArray(), 1, out var handles, commandParamEncryptable: true, responseParamEncryptable: true);
        var name = r.ReadSized("TPM2B_NAME", TpmsAttest.MaxNameSize);
        r.ExpectEnd("Load response");
        return new TpmHandle(handles[0], name, objectAuth);
    }

    /// <summary>TPM2_LoadExternal (Part 3, §12.3): a public key only, in the given hierarchy (NULL by default).</summary>
    public TpmHandle LoadExternal(TpmtPublic inPublic, uint hierarchy = TpmRh.Null)
    {
        var w = new TpmWriter();
        w.WriteUInt16(0);
        inPublic.WriteSized(w);
        w.WriteUInt32(hierarchy);
        var r = Execute(TpmCc.LoadExternal, [], 0, null, w.ToArray(), 1, out var handles);
        var name = r.ReadSized("TPM2B_NAME", TpmsAttest.MaxNameSize);
        r.ExpectEnd("LoadExternal response");
        return new TpmHandle(handles[0], name);
    }

    /// <summary>
    /// TPM2_ReadPublic (Part 3, §12.4). The Name is checked against the public area
    /// returned, so a handle whose Name we use in HMACs is consistent with its key.
    /// </summary>
    public (TpmtPublic Public, byte[] Name, byte[] QualifiedName) ReadPublic(uint handle)
    {
        // No parameter encryption: the public area is not secret, and the command's cpHash
        // would need the very Name being read. A substituted Name fails every later HMAC.
        var r = Execute(TpmCc.ReadPublic, [new TpmHandle(handle)], 0, null, [], 0, out _);
        int nameAlgAt = r.Offset + 4; // TPM2B_PUBLIC.size, TPMT_PUBLIC.type, nameAlg
        var pub = TpmtPublic.ReadSized(ref r);
        if (!TpmHash.Computable(pub.NameAlg))
        {
            throw new TpmFormatException(nameAlgAt, $"a nameAlg whose Name can be checked (got 0x{(ushort)pub.NameAlg:x4})");
        }
        var name = r.ReadSized("TPM2B_NAME name", TpmsAttest.MaxNameSize);
        var qn = r.ReadSized("TPM2B_NAME qualifiedName", TpmsAttest.MaxNameSize);
        r.ExpectEnd("ReadPublic response");
        if (!name.AsSpan().SequenceEqual(pub.Name()))
        {
            throw new TpmFormatException(r.Offset, "a Name matching the returned public area");
        }
        return (pub, name, qn);
    }

    /// <summary>A handle for a loaded or persistent object, with its Name read from the TPM.</summary>
    public TpmHandle HandleOf(uint handle, byte[]? auth = null) => new(handle, ReadPublic(handle).Name, auth);

    /// <summary>
    /// TPM2_ActivateCredential (Part 3, §12.5): recovers a credential MakeCredential bound to
    /// <paramref name="activate"/>'s Name and encrypted to <paramref name="key"/> (the EK).
    /// An EK with the TCG default policy needs a policy session with PolicySecret(endorsement).
    /// </summary>
    public byte[] ActivateCredential(TpmHandle activate, TpmHandle key, Tpm2bIdObject credentialBlob, Tpm2bEncryptedSecret secret,
        TpmSession? activateAuth = null, TpmSession? keyAuth = null)
    {
        var w = new TpmWriter();
        credentialBlob.Write(w);
        secret.Write(w);
        var r = Execute(TpmCc.ActivateCredential, [activate, key], 2, [activateAuth, keyAuth], w.ToArray(), 0, out _,
            commandParamEncryptable: true, responseParamEncryptable: true);
        var cert = r.ReadSized("TPM2B_DIGEST certInfo", TpmConstants.MaxDigestSize);
        r.ExpectEnd("ActivateCredential response");
        return cert;
    }

    /// <summary>TPM2_MakeCredential (Part 3, §12.6), done by the TPM with a loaded public key.</summary>
    public (Tpm2bIdObject Blob, Tpm2bEncryptedSecret Secret) MakeCredential(TpmHandle key, byte[] credential, byte[] objectName)
    {
        var w = new TpmWriter();
        w.WriteSized(credential).WriteSized(objectName);
        var r = Execute(TpmCc.MakeCredential, [key], 0, null, w.ToArray(), 0, out _, commandParamEncryptable: true, responseParamEncryptable: true);
        var blob = Tpm2bIdObject.Read(ref r);
        var secret = Tpm2bEncryptedSecret.Read(ref r);
        r.ExpectEnd("MakeCredential response");
        return (blob, secret);
    }

    /// <summary>TPM2_Unseal (Part 3, §12.7): the data of a sealed KEYEDHASH object.</summary>
    public byte[] Unseal(TpmHandle item, TpmSession? auth = null)
    {
        var r = Execute(TpmCc.Unseal, [item], 1, [auth], [], 0, out _, responseParamEncryptable: true);
        var data = r.ReadSized("TPM2B_SENSITIVE_DATA", 256);
        r.ExpectEnd("Unseal response");
        return data;
    }

    /// <summary>
    /// TPM2_Import (Part 3, §13.3): imports an object duplicated to <paramref name="parent"/>;
    /// load the returned private area with <see cref="Load"/>.
    /// </summary>
    public byte[] Import(TpmHandle parent, byte[] encryptionKey, TpmtPublic objectPublic, byte[] duplicate, byte[] inSymSeed,
        TpmtSymDef symmetricAlg, TpmSession? auth = null)
    {
        var w = new TpmWriter();
        w.WriteSized(encryptionKey);
        objectPublic.WriteSized(w);
        w.WriteSized(duplicate).WriteSized(inSymSeed);
        symmetricAlg.Write(w);
        var r = Execute(TpmCc.Import, [parent], 1, [auth], w.ToArray(), 0, out _, commandParamEncryptable: true, responseParamEncryptable: true);
        var priv = r.ReadSized("TPM2B_PRIVATE", 2048);
        r.ExpectEnd("Import response");
        return priv;
    }
}

/// <summary>TPM2B_CREATION_DATA, creationHash and TPMT_TK_CREATION of a new object.</summary>
public sealed record CreationEvidence(byte[] CreationData, byte[] CreationHash, TpmtTicket Ticket);

/// <summary>
/// What CreatePrimary (a loaded <see cref="Handle"/>) or Create (a <see cref="Private"/>
/// area to load) returns.
/// </summary>
public sealed record CreatedObject(TpmHandle? Handle, TpmtPublic Public, byte[] Private, CreationEvidence Creation)
{
    public byte[] Name => Public.Name();
}

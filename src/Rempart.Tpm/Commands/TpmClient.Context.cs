using Rempart.Tpm.Marshal;
using Rempart.Tpm.Sessions;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm;

/// <summary>Part 3, §28 (Context Management).</summary>
public sealed partial class TpmClient
{
    /// <summary>TPM2_FlushContext (Part 3, §28.4): the handle is a parameter, not in the handle area.</summary>
    public void FlushContext(uint handle)
    {
        var w = new TpmWriter().WriteUInt32(handle);
        Execute(TpmCc.FlushContext, [], 0, null, w.ToArray(), 0, out _);
    }

    /// <summary>Flushes a session and wipes its secrets.</summary>
    public void FlushSession(TpmSession session)
    {
        try
        {
            FlushContext(session.Handle);
        }
        finally
        {
            session.Forget();
            if (ReferenceEquals(session, EncryptionSession))
            {
                EncryptionSession = null;
            }
        }
    }

    /// <summary>
    /// TPM2_EvictControl (Part 3, §28.5): makes a transient object persistent at
    /// <paramref name="persistent"/>, or evicts the persistent object when
    /// <paramref name="obj"/> is that persistent handle.
    /// </summary>
    public void EvictControl(TpmHandle auth, TpmHandle obj, uint persistent, TpmSession? session = null)
    {
        var w = new TpmWriter().WriteUInt32(persistent);
        Execute(TpmCc.EvictControl, [auth, obj], 1, [session], w.ToArray(), 0, out _);
    }

    /// <summary>TPM2_ContextSave (Part 3, §28.2).</summary>
    public TpmsContext ContextSave(uint handle)
    {
        var r = Execute(TpmCc.ContextSave, [new TpmHandle(handle)], 0, null, [], 0, out _);
        var c = TpmsContext.Read(ref r);
        r.ExpectEnd("ContextSave response");
        return c;
    }

    /// <summary>TPM2_ContextLoad (Part 3, §28.3): returns the new handle.</summary>
    public uint ContextLoad(TpmsContext context)
    {
        var w = new TpmWriter();
        context.Write(w);
        var r = Execute(TpmCc.ContextLoad, [], 0, null, w.ToArray(), 1, out var handles);
        r.ExpectEnd("ContextLoad response");
        return handles[0];
    }
}

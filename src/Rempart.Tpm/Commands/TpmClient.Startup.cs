using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm;

/// <summary>Part 3, §9 (Start-up), §10 (Testing), §16 (Random), §29 (Clock and Timers), §30 (Capability).</summary>
public sealed partial class TpmClient
{
    /// <summary>TPM2_Startup (Part 3, §9.3).</summary>
    public void Startup(TpmSu type = TpmSu.Clear)
    {
        var p = new TpmWriter().WriteUInt16((ushort)type);
        Execute(TpmCc.Startup, [], 0, null, p.ToArray(), 0, out _);
    }

    /// <summary>
    /// Startup(CLEAR), treating TPM_RC_INITIALIZE (already started) as success. A swtpm that
    /// has not been powered on answers TPM_RC_FAILURE: with its control channel, send
    /// CMD_INIT and try again.
    /// </summary>
    public void EnsureStarted(Transport.SwtpmControl? control = null)
    {
        try
        {
            Startup();
        }
        catch (TpmException e) when (e.Is(TpmRc.Initialize))
        {
        }
        catch (TpmException e) when (e.Is(TpmRc.Failure) && control is not null)
        {
            control.Init();
            Startup();
        }
    }

    /// <summary>TPM2_Shutdown (Part 3, §9.4).</summary>
    public void Shutdown(TpmSu type = TpmSu.Clear)
    {
        var p = new TpmWriter().WriteUInt16((ushort)type);
        Execute(TpmCc.Shutdown, [], 0, null, p.ToArray(), 0, out _);
    }

    /// <summary>TPM2_GetRandom (Part 3, §16.1). Loops: a TPM returns at most one digest's worth per call.</summary>
    public byte[] GetRandom(int count)
    {
        var result = new List<byte>(count);
        while (result.Count < count)
        {
            var p = new TpmWriter().WriteUInt16((ushort)Math.Min(count - result.Count, 32));
            var r = Execute(TpmCc.GetRandom, [], 0, null, p.ToArray(), 0, out _, responseParamEncryptable: true);
            var bytes = r.ReadSized("TPM2B_DIGEST randomBytes", TpmConstants.MaxDigestSize);
            r.ExpectEnd("GetRandom response");
            if (bytes.Length == 0)
            {
                throw new TpmFormatException(r.Offset, "random bytes (TPM returned none)");
            }
            result.AddRange(bytes);
        }
        return [.. result];
    }

    /// <summary>TPM2_ReadClock (Part 3, §29.1).</summary>
    public TpmsTimeInfo ReadClock()
    {
        var r = Execute(TpmCc.ReadClock, [], 0, null, [], 0, out _);
        var t = TpmsTimeInfo.Read(ref r);
        r.ExpectEnd("ReadClock response");
        return t;
    }

    /// <summary>TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES) (Part 3, §30.2): all properties from <paramref name="first"/>.</summary>
    public IReadOnlyDictionary<TpmPt, uint> GetTpmProperties(TpmPt first = TpmPt.FamilyIndicator, uint count = 128)
    {
        var result = new Dictionary<TpmPt, uint>();
        uint property = (uint)first;
        while (true)
        {
            var r = GetCapability(TpmCap.TpmProperties, property, count, out bool more);
            int n = r.ReadCount("TPML_TAGGED_TPM_PROPERTY", 256);
            uint last = property;
            for (int i = 0; i < n; i++)
            {
                last = r.ReadUInt32("TPMS_TAGGED_PROPERTY.property");
                result[(TpmPt)last] = r.ReadUInt32("TPMS_TAGGED_PROPERTY.value");
            }
            r.ExpectEnd("GetCapability response");
            if (!more || n == 0 || result.Count >= count)
            {
                return result;
            }
            property = last + 1;
        }
    }

    /// <summary>TPM2_GetCapability(TPM_CAP_PCRS): the allocated banks and their PCRs.</summary>
    public TpmlPcrSelection GetPcrBanks()
    {
        var r = GetCapability(TpmCap.Pcrs, 0, 1, out _);
        var sel = TpmlPcrSelection.Read(ref r);
        r.ExpectEnd("GetCapability response");
        return sel;
    }

    /// <summary>TPM2_GetCapability(TPM_CAP_ALGS): the algorithms the TPM implements.</summary>
    public IReadOnlyList<TpmAlgId> GetAlgorithms()
    {
        var list = new List<TpmAlgId>();
        uint next = 0;
        while (true)
        {
            var r = GetCapability(TpmCap.Algs, next, 64, out bool more);
            int n = r.ReadCount("TPML_ALG_PROPERTY", 256);
            for (int i = 0; i < n; i++)
            {
                var alg = (TpmAlgId)r.ReadUInt16("TPMS_ALG_PROPERTY.alg");
                r.ReadUInt32("TPMS_ALG_PROPERTY.algProperties");
                list.Add(alg);
            }
            r.ExpectEnd("GetCapability response");
            if (!more || n == 0)
            {
                return list;
            }
            next = (uint)list[^1] + 1;
        }
    }

    /// <summary>TPM2_GetCapability(TPM_CAP_HANDLES): handles in use from <paramref name="first"/> (e.g. 0x81000000 persistent).</summary>
    public IReadOnlyList<uint> GetHandles(uint first)
    {
        var list = new List<uint>();
        uint next = first;
        while (true)
        {
            var r = GetCapability(TpmCap.Handles, next, 64, out bool more);
            int n = r.ReadCount("TPML_HANDLE", 254);
            for (int i = 0; i < n; i++)
            {
                uint h = r.ReadUInt32("TPM_HANDLE");
                if (TpmRh.HandleType(h) != TpmRh.HandleType(first))
                {
                    return list;
                }
                list.Add(h);
            }
            r.ExpectEnd("GetCapability response");
            if (!more || n == 0)
            {
                return list;
            }
            next = list[^1] + 1;
        }
    }

    /// <summary>TPM2_GetCapability(TPM_CAP_ECC_CURVES).</summary>
    public IReadOnlyList<TpmEccCurve> GetEccCurves()
    {
        var r = GetCapability(TpmCap.EccCurves, 0, 64, out _);
        int n = r.ReadCount("TPML_ECC_CURVE", 64);
        var list = new List<TpmEccCurve>(n);
        for (int i = 0; i < n; i++)
        {
            list.Add((TpmEccCurve)r.ReadUInt16("TPM_ECC_CURVE"));
        }
        r.ExpectEnd("GetCapability response");
        return list;
    }

    /// <summary>TPM2_GetCapability (Part 3, §30.2): returns a reader positioned on the capability's union.</summary>
    private TpmReader GetCapability(TpmCap cap, uint property, uint count, out bool moreData)
    {
        var p = new TpmWriter().WriteUInt32((uint)cap).WriteUInt32(property).WriteUInt32(count);
        var r = Execute(TpmCc.GetCapability, [], 0, null, p.ToArray(), 0, out _);
        int at = r.Offset;
        byte more = r.ReadByte("moreData");
        if (more > 1)
        {
            throw new TpmFormatException(at, $"TPMI_YES_NO moreData (got {more})");
        }
        moreData = more == 1;
        at = r.Offset;
        uint got = r.ReadUInt32("TPMS_CAPABILITY_DATA.capability");
        if (got != (uint)cap)
        {
            throw new TpmFormatException(at, $"capability {cap} (got {got})");
        }
        return r;
    }
}

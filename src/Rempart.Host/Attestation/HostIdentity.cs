using Rempart.Attestation.Protocol;
using Rempart.Tpm;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Sessions;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Templates;

namespace Rempart.Host.Attestation;

/// <summary>
/// What a host presents at enrolment (DESIGN §3.1): its EK public area (TCG EK Credential
/// Profile template L-1 or L-2), the EK certificate's DER when the TPM holds one, and the AK
/// public area (the deterministic primary AK of <see cref="TpmClient.CreateAk"/>).
/// </summary>
public sealed record EnrolmentIdentity(TpmtPublic EkPublic, byte[]? EkCertificate, TpmtPublic AkPublic)
{
    /// <summary>The AK's Name (Part 1, §16), which the Guardian binds the credential to.</summary>
    public byte[] AkName => AkPublic.Name();

    /// <summary>The wire request: TPM2B_PUBLIC of EK and AK, the certificate DER, all base64.</summary>
    public EnrolmentRequest ToRequest(string hostname) => new(
        hostname,
        Convert.ToBase64String(EkPublic.ToSizedBytes()),
        EkCertificate is null ? null : Convert.ToBase64String(EkCertificate),
        Convert.ToBase64String(AkPublic.ToSizedBytes()));
}

/// <summary>
/// Reads the host's enrolment identity from its TPM. Both keys are primaries re-created from
/// their templates (the same seed gives the same keys), so nothing is kept on disk; each is
/// flushed as soon as its public area is read (swtpm and many TPMs hold three transient objects).
/// </summary>
public sealed class HostIdentity
{
    private readonly TpmClient _tpm;

    /// <param name="tpm">The host TPM.</param>
    /// <param name="ekKind">"rsa" (template L-1, the default) or "ecc" (L-2).</param>
    /// <param name="akKind">"rsa" (RSASSA-SHA256, the default) or "ecc" (ECDSA-SHA256).</param>
    public HostIdentity(TpmClient tpm, string ekKind = "rsa", string akKind = "rsa")
    {
        _ = KeyTemplates.Ek(ekKind);
        _ = KeyTemplates.Ak(akKind);
        _tpm = tpm;
        EkKind = ekKind;
        AkKind = akKind;
    }

    public string EkKind { get; }

    public string AkKind { get; }

    /// <summary>Re-creates EK and AK, reads their public areas and the EK certificate, and flushes both keys.</summary>
    public EnrolmentIdentity Read() => Transients.Run(_tpm, t =>
    {
        var ek = _tpm.CreateEk(EkKind);
        t.Flush(t.Track(ek.Handle!));
        var ak = _tpm.CreateAk(AkKind);
        t.Flush(t.Track(ak.Handle!));
        using var cert = _tpm.ReadEkCertificate(EkKind);
        return new EnrolmentIdentity(ek.Public, cert?.RawData, ak.Public);
    });

    /// <summary>The enrolment request for this host (POST /v1/enrolments).</summary>
    public EnrolmentRequest BuildRequest(string hostname)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(hostname);
        return Read().ToRequest(hostname);
    }
}

/// <summary>
/// The transient objects and sessions one host operation creates, flushed in reverse order
/// when it ends, whether it succeeded or not: there is no resource manager in front of swtpm
/// and libtpms holds three transient objects, so a leak breaks the next operation.
/// </summary>
internal sealed class Transients
{
    private readonly TpmClient _tpm;
    private readonly List<uint> _handles = [];
    private readonly List<TpmSession> _sessions = [];

    private Transients(TpmClient tpm) => _tpm = tpm;

    /// <summary>
    /// Runs <paramref name="body"/> and flushes what it tracked. A flush failure after a failed
    /// body is not allowed to hide the body's exception; after a successful body it is thrown.
    /// </summary>
    public static T Run<T>(TpmClient tpm, Func<Transients, T> body)
    {
        var t = new Transients(tpm);
        T result;
        try
        {
            result = body(t);
        }
        catch
        {
            t.FlushAll(out _);
            throw;
        }
        t.FlushAll(out var error);
        if (error is not null)
        {
            throw error;
        }
        return result;
    }

    public TpmHandle Track(TpmHandle handle)
    {
        _handles.Add(handle.Value);
        return handle;
    }

    public TSession Track<TSession>(TSession session)
        where TSession : TpmSession
    {
        _sessions.Add(session);
        return session;
    }

    /// <summary>Flushes one tracked object now (to free a slot for the next one).</summary>
    public void Flush(TpmHandle handle)
    {
        _handles.Remove(handle.Value);
        _tpm.FlushContext(handle.Value);
    }

    private void FlushAll(out Exception? first)
    {
        first = null;
        for (int i = _sessions.Count - 1; i >= 0; i--)
        {
            Try(() => _tpm.FlushSession(_sessions[i]), ref first);
        }
        for (int i = _handles.Count - 1; i >= 0; i--)
        {
            uint h = _handles[i];
            Try(() => _tpm.FlushContext(h), ref first);
        }
        _sessions.Clear();
        _handles.Clear();
    }

    private static void Try(Action flush, ref Exception? first)
    {
        try
        {
            flush();
        }
        catch (Exception e) when (e is TpmException or IOException or TpmFormatException or TpmSessionException)
        {
            first ??= e;
        }
    }
}

using System.Security.Cryptography;
using Rempart.Attestation.Protocol;
using Rempart.KeyProtection;
using Rempart.Tpm;
using Rempart.Host.Attestation;
using Rempart.Tpm.Structures;

namespace Rempart.Host.Keys;

/// <summary>A released key could not be recovered in this TPM (wrong TPM, boot state changed, damaged answer).</summary>
public sealed class ReleaseUnwrapException(string id, string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>Stable identifier: <c>release.unwrap.load</c>, <c>release.unwrap.policy</c>, <c>release.unwrap.decrypt</c>, <c>release.unwrap.length</c>.</summary>
    public string Id { get; } = id;
}

/// <summary>
/// The host's half of a release (docs/key-release.md): loads the binding key under the SRK,
/// satisfies its PolicyPCR in a policy session (the TPM compares the PCRs now against those the
/// Guardian attested), and runs TPM2_RSA_Decrypt with the release's label — over a salted,
/// parameter-encrypted session, so the key never crosses the TPM bus in clear. The returned key
/// is the caller's to dispose (which wipes it).
/// </summary>
public sealed class ReleaseUnwrapper(TpmClient tpm)
{
    /// <param name="bindingPrivate">The binding key's TPM2B_PRIVATE (wrapped by this TPM's SRK; safe to keep on disk).</param>
    /// <param name="bindingPublic">The binding key's public area, as certified in the attestation.</param>
    /// <param name="bindingPcrs">The PCR selection of its PolicyPCR.</param>
    /// <param name="release">The Guardian's answer.</param>
    public VmMasterKey Unwrap(byte[] bindingPrivate, TpmtPublic bindingPublic, TpmlPcrSelection bindingPcrs, ReleaseResponse release)
    {
        if (release.Scheme != ReleaseWrap.Scheme)
        {
            throw new ReleaseUnwrapException("release.unwrap.scheme", $"unknown release scheme '{release.Scheme}' (this host knows {ReleaseWrap.Scheme})");
        }
        if (!string.Equals(release.BindingKey, Convert.ToHexStringLower(bindingPublic.Name()), StringComparison.Ordinal))
        {
            throw new ReleaseUnwrapException("release.unwrap.binding-key", "the release is wrapped to another binding key than the one given");
        }
        byte[] wrapped;
        try
        {
            wrapped = Convert.FromBase64String(release.WrappedKey);
        }
        catch (FormatException)
        {
            throw new ReleaseUnwrapException("release.unwrap.format", "wrappedKey is not base64");
        }
        var (scheme, label) = ReleaseWrap.DecryptParameters(release.ReleaseId);
        var clear = Decrypt(bindingPrivate, bindingPublic, bindingPcrs, wrapped, scheme, label);
        try
        {
            return clear.Length == VmMasterKey.Length
                ? VmMasterKey.FromBytes(clear)
                : throw new ReleaseUnwrapException("release.unwrap.length", $"the released key is {clear.Length} bytes, expected {VmMasterKey.Length}");
        }
        finally
        {
            CryptographicOperations.ZeroMemory(clear);
        }
    }

    /// <summary>
    /// TPM2_RSA_Decrypt of <paramref name="wrapped"/> (RSA-OAEP-SHA256 with <paramref name="label"/>,
    /// its terminating zero included) by the binding key under its PolicyPCR: a live migration's
    /// channel share (docs/migration.md) is opened this way. The caller wipes the result.
    /// </summary>
    public byte[] DecryptShare(byte[] bindingPrivate, TpmtPublic bindingPublic, TpmlPcrSelection bindingPcrs, byte[] wrapped, byte[] label) =>
        Decrypt(bindingPrivate, bindingPublic, bindingPcrs, wrapped, new TpmtScheme(TpmAlgId.Oaep, TpmAlgId.Sha256), label);

    private byte[] Decrypt(byte[] bindingPrivate, TpmtPublic bindingPublic, TpmlPcrSelection bindingPcrs, byte[] wrapped, TpmtScheme scheme, byte[] label)
    {
        return Transients.Run(tpm, t =>
        {
            var srk = tpm.CreateSrk();
            t.Track(srk.Handle!);
            if (tpm.EncryptionSession is null)
            {
                t.Track(tpm.EnableParameterEncryption(srk.Handle!, srk.Public));
            }
            TpmHandle key;
            try
            {
                key = t.Track(tpm.Load(srk.Handle!, bindingPrivate, bindingPublic));
            }
            catch (TpmException e)
            {
                throw new ReleaseUnwrapException("release.unwrap.load", $"this TPM cannot load the binding key (another TPM's, or its SRK changed): {e.Message}", e);
            }
            t.Flush(srk.Handle!);
            var policy = t.Track(tpm.StartAuthSession(TpmSe.Policy));
            byte[] clear;
            try
            {
                tpm.PolicyPcr(policy, [], bindingPcrs);
                clear = tpm.RsaDecrypt(key, wrapped, scheme, label, policy);
            }
            catch (TpmException e) when (e.Is(TpmRc.PolicyFail) || e.Is(TpmRc.PcrChanged))
            {
                throw new ReleaseUnwrapException("release.unwrap.policy", $"the PCRs are no longer those the Guardian attested: {e.Message}", e);
            }
            catch (TpmException e)
            {
                throw new ReleaseUnwrapException("release.unwrap.decrypt", $"the TPM refused to decrypt the released key (damaged answer or another release id): {e.Message}", e);
            }
            return clear;
        });
    }
}

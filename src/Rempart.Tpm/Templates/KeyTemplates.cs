using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm.Templates;

/// <summary>
/// Standard key templates: the EK templates of the TCG EK Credential Profile 2.0 (§2.1.5.1,
/// templates L-1 and L-2: what tpm2_createek and TPM manufacturers use), the SRK of the TCG
/// TPM v2.0 Provisioning Guidance (§7.5.1), and restricted signing attestation keys.
/// </summary>
public static class KeyTemplates
{
    /// <summary>The TCG default EK policy: PolicySecret(TPM_RH_ENDORSEMENT), SHA-256.</summary>
    public static readonly byte[] EkPolicy = Convert.FromHexString("837197674484B3F81A90CC8D46A5D724FD52D76E06520B64F2A1DA1B331469AA");

    private const TpmaObject EkAttributes = TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.SensitiveDataOrigin
        | TpmaObject.AdminWithPolicy | TpmaObject.Restricted | TpmaObject.Decrypt;

    private const TpmaObject SrkAttributes = TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.SensitiveDataOrigin
        | TpmaObject.UserWithAuth | TpmaObject.NoDa | TpmaObject.Restricted | TpmaObject.Decrypt;

    /// <summary>Attributes an attestation key must have (the Guardian checks them at enrolment).</summary>
    public const TpmaObject AkAttributes = TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.SensitiveDataOrigin
        | TpmaObject.UserWithAuth | TpmaObject.Restricted | TpmaObject.Sign;

    /// <summary>EK Credential Profile template L-1: RSA-2048, AES-128-CFB, unique = 256 zero bytes.</summary>
    public static TpmtPublic EkRsa2048 { get; } = new(TpmAlgId.Rsa, TpmAlgId.Sha256, EkAttributes, EkPolicy,
        new TpmsRsaParms(TpmtSymDef.Aes128Cfb, TpmtScheme.Null, 2048, 0), new TpmBufferId(new byte[256]));

    /// <summary>EK Credential Profile template L-2: ECC NIST P-256, AES-128-CFB, unique = two 32-byte zero coordinates.</summary>
    public static TpmtPublic EkEccP256 { get; } = new(TpmAlgId.Ecc, TpmAlgId.Sha256, EkAttributes, EkPolicy,
        new TpmsEccParms(TpmtSymDef.Aes128Cfb, TpmtScheme.Null, TpmEccCurve.NistP256, TpmtScheme.Null), new TpmsEccPoint(new byte[32], new byte[32]));

    /// <summary>Provisioning Guidance SRK: RSA-2048 storage key, AES-128-CFB, empty unique.</summary>
    public static TpmtPublic SrkRsa2048 { get; } = new(TpmAlgId.Rsa, TpmAlgId.Sha256, SrkAttributes, [],
        new TpmsRsaParms(TpmtSymDef.Aes128Cfb, TpmtScheme.Null, 2048, 0), new TpmBufferId([]));

    /// <summary>Provisioning Guidance SRK: ECC NIST P-256 storage key, AES-128-CFB.</summary>
    public static TpmtPublic SrkEccP256 { get; } = new(TpmAlgId.Ecc, TpmAlgId.Sha256, SrkAttributes, [],
        new TpmsEccParms(TpmtSymDef.Aes128Cfb, TpmtScheme.Null, TpmEccCurve.NistP256, TpmtScheme.Null), new TpmsEccPoint([], []));

    /// <summary>Attestation key: restricted signing RSA-2048, RSASSA-SHA256.</summary>
    public static TpmtPublic AkRsa2048 { get; } = new(TpmAlgId.Rsa, TpmAlgId.Sha256, AkAttributes, [],
        new TpmsRsaParms(TpmtSymDef.Null, new TpmtScheme(TpmAlgId.RsaSsa, TpmAlgId.Sha256), 2048, 0), new TpmBufferId([]));

    /// <summary>Attestation key: restricted signing ECC P-256, ECDSA-SHA256.</summary>
    public static TpmtPublic AkEccP256 { get; } = new(TpmAlgId.Ecc, TpmAlgId.Sha256, AkAttributes, [],
        new TpmsEccParms(TpmtSymDef.Null, new TpmtScheme(TpmAlgId.EcDsa, TpmAlgId.Sha256), TpmEccCurve.NistP256, TpmtScheme.Null), new TpmsEccPoint([], []));

    /// <summary>
    /// A sealed data object (KEYEDHASH, no scheme) that only a policy can unseal:
    /// userWithAuth is clear so the authValue alone never suffices.
    /// </summary>
    public static TpmtPublic SealedData(byte[] authPolicy) => new(TpmAlgId.KeyedHash, TpmAlgId.Sha256,
        TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.NoDa, authPolicy,
        new TpmsKeyedHashParms(TpmtScheme.Null), new TpmBufferId([]));

    /// <summary>The EK template for "rsa" or "ecc".</summary>
    public static TpmtPublic Ek(string kind) => kind switch
    {
        "rsa" => EkRsa2048,
        "ecc" => EkEccP256,
        _ => throw new ArgumentException($"EK type '{kind}' unknown: use rsa or ecc"),
    };

    public static TpmtPublic Ak(string kind) => kind switch
    {
        "rsa" => AkRsa2048,
        "ecc" => AkEccP256,
        _ => throw new ArgumentException($"AK type '{kind}' unknown: use rsa or ecc"),
    };

    /// <summary>Sanity check that the EK policy constant equals PolicySecret(TPM_RH_ENDORSEMENT) computed here.</summary>
    internal static byte[] ComputeEkPolicy() =>
        new PolicyDigest(TpmAlgId.Sha256).PolicySecret(TpmHandle.HandleName(TpmRh.Endorsement)).Digest;
}

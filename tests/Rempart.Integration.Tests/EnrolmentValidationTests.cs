using Rempart.Attestation.Protocol;
using Rempart.Host.Attestation;
using Rempart.Host.Guardian;
using Rempart.Tpm;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Templates;

namespace Rempart.Integration.Tests;

/// <summary>Enrolment refuses AKs it could not rely on, with a named reason, before any challenge is made.</summary>
public sealed class EnrolmentValidationTests
{
    public static TheoryData<string, string> Cases => new()
    {
        { "ak_decrypts", "enrol.ak.attributes" },
        { "ak_not_restricted", "enrol.ak.attributes" },
        { "ak_unsupported_curve", "enrol.ak.unsupported" },
        { "ak_sha1_name", "enrol.ak.name-alg" },
        { "ak_garbage", "enrol.ak.format" },
        { "ek_not_base64", "request.base64" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task A_bad_AK_or_request_is_refused_by_name(string name, string id)
    {
        await using var g = await GuardianFixture.StartAsync();
        using var client = new GuardianClient(g.Url);
        using var host = new SwtpmHost();
        EnrolmentRequest good;
        using (var c = host.Tpm.Client())
        {
            good = new HostIdentity(c).BuildRequest("hv");
        }
        var ak = TpmtPublic.ParseSized(Convert.FromBase64String(good.AkPublic));
        TpmtPublic Ecc(TpmEccCurve curve) => KeyTemplates.AkEccP256 with
        {
            Parameters = new TpmsEccParms(TpmtSymDef.Null, new TpmtScheme(TpmAlgId.EcDsa, TpmAlgId.Sha256), curve, TpmtScheme.Null),
            Unique = new TpmsEccPoint(new byte[32], new byte[32]),
        };
        var request = name switch
        {
            "ak_decrypts" => good with { AkPublic = B64(ak with { ObjectAttributes = ak.ObjectAttributes | TpmaObject.Decrypt }) },
            "ak_not_restricted" => good with { AkPublic = B64(ak with { ObjectAttributes = ak.ObjectAttributes & ~TpmaObject.Restricted }) },
            "ak_unsupported_curve" => good with { AkPublic = B64(Ecc(TpmEccCurve.BnP256)) },
            "ak_sha1_name" => good with { AkPublic = B64(ak with { NameAlg = TpmAlgId.Sha1 }) },
            "ak_garbage" => good with { AkPublic = Convert.ToBase64String([0, 4, 1, 2, 3, 4]) },
            _ => good with { EkPublic = "not base64!" },
        };
        var e = await Assert.ThrowsAsync<GuardianException>(() => client.StartEnrolmentAsync(request));
        Assert.Equal(id, e.Id);
        Assert.Equal(400, e.Status);
    }

    private static string B64(TpmtPublic p) => Convert.ToBase64String(p.ToSizedBytes());
}

using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Rempart.Guardian.Keys;
using Rempart.Guardian.Tests.Keys;
using Rempart.Host.Guardian;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Integration.Tests;

/// <summary>
/// A Guardian whose keys live in a PKCS#11 token (SoftHSM2): a swtpm host attests, and its health
/// token — signed inside the token — verifies against the Guardian's JWKS with .NET's own ECDSA.
/// </summary>
public sealed class Pkcs11GuardianTests
{
    [Fact]
    public async Task Health_tokens_of_a_Guardian_on_the_pkcs11_provider_verify_against_its_JWKS()
    {
        const string label = "guardian-e2e";
        await using var g = await GuardianFixture.StartAsync(keys: new KeyProviderOptions("pkcs11", SoftHsm.Module, label, SoftHsm.PinFile(label)));
        using var client = new GuardianClient(g.Url);
        await g.CreateGroupAsync("prod");
        using var host = new SwtpmHost();
        var enrolled = await host.EnrolAsync(client);
        await g.ApproveAsync(enrolled.HostId, "prod");
        var result = await host.AttestAsync(client);
        Assert.True(result.Status == "affirming", string.Join("; ", result.Failures.Select(f => $"{f.Id}: {f.Message}")));

        var keys = JsonNode.Parse(await g.Admin.GetStringAsync("v1/keys"))!;
        Assert.Equal("pkcs11", keys["provider"]!.GetValue<string>());
        var signingKid = keys["signing"]!["kid"]!.GetValue<string>();

        var jwk = JsonNode.Parse(await g.Http.GetStringAsync(".well-known/jwks.json"))!["keys"]![0]!;
        Assert.Equal(signingKid, jwk["kid"]!.GetValue<string>());
        var parts = result.Token!.Split('.');
        Assert.Equal(signingKid, JsonNode.Parse(Base64Url.DecodeFromChars(parts[0]))!["kid"]!.GetValue<string>());
        using var key = ECDsa.Create(new ECParameters
        {
            Curve = ECCurve.NamedCurves.nistP256,
            Q = new ECPoint { X = Base64Url.DecodeFromChars(jwk["x"]!.GetValue<string>()), Y = Base64Url.DecodeFromChars(jwk["y"]!.GetValue<string>()) },
        });
        Assert.True(key.VerifyData(Encoding.ASCII.GetBytes(parts[0] + "." + parts[1]), Base64Url.DecodeFromChars(parts[2]), HashAlgorithmName.SHA256));
        var valid = await client.PostJsonAsync("v1/tokens/validate", new { token = result.Token });
        Assert.True(valid["valid"]!.GetValue<bool>(), valid.ToJsonString());

        // The signing key is in the token (pkcs11-tool sees it, sensitive and never extractable), not in the data folder.
        var listing = Tool.Run("pkcs11-tool", ["--module", SoftHsm.Module, "--token-label", label, "--login", "--pin", SoftHsm.Pin(label), "--list-objects", "--type", "privkey"],
            env: SoftHsm.Env).Ok().Stdout;
        Assert.Contains(Pkcs11KeyProvider.SigningLabel, listing, StringComparison.Ordinal);
        Assert.DoesNotContain(Directory.GetFiles(g.DataDir, "*.p8", SearchOption.AllDirectories), f => !f.EndsWith("tls-key.p8", StringComparison.Ordinal));
    }
}

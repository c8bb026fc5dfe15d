using System.Buffers.Text;
using System.Text;
using Rempart.Guardian.Keys;
using Rempart.Guardian.Tokens;

namespace Rempart.Guardian.Tests.Tokens;

/// <summary>Token validation with the signing key imported once: every token is still checked on its own.</summary>
public sealed class HealthTokensTests : IDisposable
{
    private static readonly byte[] Secret = "health-tokens-test-secret-0123456789"u8.ToArray();
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-tokens-").FullName;
    private readonly string _otherDir = Directory.CreateTempSubdirectory("rempart-tokens-other-").FullName;

    public void Dispose()
    {
        Directory.Delete(_dir, true);
        Directory.Delete(_otherDir, true);
    }

    private static HealthClaims Claims(string jti) => new(jti, "host-1", "group-a", "affirming", "policy", 1, "thumb", "digest", 0);

    [Fact]
    public void Valid_tokens_pass_again_and_again_and_a_changed_or_foreign_one_never_does()
    {
        using var keys = FileKeyProvider.Open(_dir, Secret);
        using var otherKeys = FileKeyProvider.Open(_otherDir, Secret);
        var tokens = new HealthTokens(keys, "guardian-test");
        var now = DateTimeOffset.UtcNow;
        var token = tokens.Issue(Claims("jti-1"), now, now.AddMinutes(5));
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal("jti-1", tokens.Validate(token, now, out var reason)?["jti"]?.GetValue<string>());
            Assert.Equal("", reason);
        }

        var parts = token.Split('.');
        var payload = Encoding.UTF8.GetString(Base64Url.DecodeFromChars(parts[1])).Replace("host-1", "host-2", StringComparison.Ordinal);
        var changed = parts[0] + "." + Base64Url.EncodeToString(Encoding.UTF8.GetBytes(payload)) + "." + parts[2];
        Assert.Null(tokens.Validate(changed, now, out var changedReason));
        Assert.Equal("token.signature", changedReason);

        // Another Guardian's token with this Guardian's kid in its header: the signature is what fails.
        var foreign = new HealthTokens(otherKeys, "guardian-test").Issue(Claims("jti-2"), now, now.AddMinutes(5)).Split('.');
        var forged = parts[0] + "." + foreign[1] + "." + foreign[2];
        Assert.Null(tokens.Validate(forged, now, out var forgedReason));
        Assert.Equal("token.signature", forgedReason);

        Assert.Null(tokens.Validate(token, now.AddMinutes(6), out var expiredReason));
        Assert.Equal("token.expired", expiredReason);
        Assert.NotNull(tokens.Validate(token, now, out _));
    }
}

using System.Buffers.Text;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Rempart.Guardian.Api;
using Rempart.Guardian.Keys;
using Rempart.Guardian.Storage;
using Rempart.Guardian.Tokens;

namespace Rempart.Guardian.Tests.Keys;

/// <summary>
/// The Guardian with its key provider: the key API (list, rotate, retire; roles; audit), health
/// tokens signed through the provider and checked against the JWKS, and a copy of the data folder
/// and its database that reveals no private key without the operator's secret.
/// </summary>
public sealed class GuardianKeysTests : IAsyncLifetime
{
    private static readonly byte[] Secret = "guardian-keys-test-secret-not-for-production"u8.ToArray();
    private readonly string _dir = Directory.CreateTempSubdirectory("rempart-guardian-keys-").FullName;
    private readonly List<string> _cleanup = [];
    private WebApplication _app = null!;
    private HttpClient _admin = null!;
    private HttpClient _auditor = null!;
    private HttpClient _anonymous = null!;

    public async Task InitializeAsync()
    {
        int port;
        using (var l = new TcpListener(IPAddress.Loopback, 0))
        {
            l.Start();
            port = ((IPEndPoint)l.LocalEndpoint).Port;
        }
        var serve = new ServeOptions(new GuardianOptions { DataDir = _dir, TrustedEkCaDir = Path.Combine(_dir, "cas") },
            new IPEndPoint(IPAddress.Loopback, port), InsecureHttp: false, null, Secret);
        _app = await GuardianServer.BuildAsync(serve, null, _ => { });
        await _app.StartAsync();
        // HTTPS with the Guardian's own certificate (its TLS key is one more private key to look for).
        var pinned = X509Certificate2.CreateFromPem(await File.ReadAllTextAsync(Path.Combine(_dir, "tls-cert.pem"))).GetCertHashString(HashAlgorithmName.SHA256);
        HttpClient Client(string? token)
        {
            var c = new HttpClient(new HttpClientHandler { ServerCertificateCustomValidationCallback = (_, cert, _, _) => cert?.GetCertHashString(HashAlgorithmName.SHA256) == pinned })
            {
                BaseAddress = new Uri($"https://127.0.0.1:{port}/"),
            };
            if (token is not null)
            {
                c.DefaultRequestHeaders.Authorization = new("Bearer", token);
            }
            return c;
        }
        _admin = Client((await File.ReadAllTextAsync(Path.Combine(_dir, "admin-token"))).Trim());
        var auditorToken = "rpt_auditor_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        await _app.Services.GetRequiredService<IGuardianStore>().InsertApiTokenAsync(
            new ApiTokenRecord("auditor", "auditor", Roles.Auditor, SHA256.HashData(Encoding.UTF8.GetBytes(auditorToken)), DateTimeOffset.UtcNow));
        _auditor = Client(auditorToken);
        _anonymous = Client(null);
    }

    public async Task DisposeAsync()
    {
        _admin.Dispose();
        _auditor.Dispose();
        _anonymous.Dispose();
        await _app.DisposeAsync();
        foreach (var d in _cleanup.Append(_dir))
        {
            Directory.Delete(d, true);
        }
    }

    [Fact]
    public async Task Keys_are_listed_rotated_and_retired_through_the_API_by_role_and_audited()
    {
        var keys = await _auditor.GetFromJsonAsync<JsonObject>("v1/keys");
        Assert.Equal("file", keys!["provider"]!.GetValue<string>());
        var first = keys["active"]!.GetValue<string>();
        Assert.Single(keys["encryption"]!.AsArray());
        var provider = _app.Services.GetRequiredService<IGuardianKeyProvider>();
        Assert.Equal(provider.SigningKid, keys["signing"]!["kid"]!.GetValue<string>());

        Assert.Equal(HttpStatusCode.Unauthorized, (await _anonymous.GetAsync("v1/keys")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await _auditor.PostAsync("v1/keys/rotate", null)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await _auditor.PostAsync($"v1/keys/{first}/retire", null)).StatusCode);

        var rotated = await (await _admin.PostAsync("v1/keys/rotate", null)).EnsureSuccessStatusCode().Content.ReadFromJsonAsync<JsonObject>();
        var second = rotated!["kid"]!.GetValue<string>();
        Assert.Equal("active", rotated["status"]!.GetValue<string>());
        keys = await _admin.GetFromJsonAsync<JsonObject>("v1/keys");
        Assert.Equal(second, keys!["active"]!.GetValue<string>());
        Assert.Equal(["retiring", "active"], keys["encryption"]!.AsArray().Select(k => k!["status"]!.GetValue<string>()));

        var refused = await _admin.PostAsync($"v1/keys/{second}/retire", null);
        Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
        Assert.Contains("keys.retire.active", await refused.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.NotFound, (await _admin.PostAsync("v1/keys/AAAAAAAAAAAAAAAAAAAAAA/retire", null)).StatusCode);

        var retired = await (await _admin.PostAsync($"v1/keys/{first}/retire", null)).EnsureSuccessStatusCode().Content.ReadFromJsonAsync<JsonObject>();
        Assert.Equal("retired", retired!["status"]!.GetValue<string>());
        using (var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384))
        {
            KeyChecks.Throws("keys.retired", () => provider.DeriveSharedSecret(first, peer.ExportSubjectPublicKeyInfo()));
        }

        var audit = await _admin.GetStringAsync("v1/audit");
        Assert.Contains("keys.rotated", audit, StringComparison.Ordinal);
        Assert.Contains("keys.retired", audit, StringComparison.Ordinal);
        Assert.Contains(second, audit, StringComparison.Ordinal);
        Assert.True((await _admin.GetFromJsonAsync<JsonObject>("v1/audit/verify"))!["ok"]!.GetValue<bool>());
    }

    [Fact]
    public async Task Health_tokens_are_signed_through_the_provider_and_verify_with_the_published_JWKS()
    {
        var provider = _app.Services.GetRequiredService<IGuardianKeyProvider>();
        var token = _app.Services.GetRequiredService<HealthTokens>().Issue(
            new HealthClaims("jti-1", "host-1", "prod", "affirming", "p", 1, "000b", "00", 1), DateTimeOffset.UtcNow, DateTimeOffset.UtcNow.AddMinutes(5));
        var jwk = (await _anonymous.GetFromJsonAsync<JsonObject>(".well-known/jwks.json"))!["keys"]![0]!;
        Assert.Equal(provider.SigningKid, jwk["kid"]!.GetValue<string>());
        var parts = token.Split('.');
        Assert.Equal(provider.SigningKid, JsonNode.Parse(Base64Url.DecodeFromChars(parts[0]))!["kid"]!.GetValue<string>());
        using var key = ECDsa.Create(new ECParameters
        {
            Curve = ECCurve.NamedCurves.nistP256,
            Q = new ECPoint { X = Base64Url.DecodeFromChars(jwk["x"]!.GetValue<string>()), Y = Base64Url.DecodeFromChars(jwk["y"]!.GetValue<string>()) },
        });
        Assert.True(key.VerifyData(Encoding.ASCII.GetBytes(parts[0] + "." + parts[1]), Base64Url.DecodeFromChars(parts[2]), HashAlgorithmName.SHA256));
        Assert.NotNull(_app.Services.GetRequiredService<HealthTokens>().Validate(token, DateTimeOffset.UtcNow, out _));
    }

    [Fact]
    public async Task A_copy_of_the_data_folder_and_database_reveals_no_private_key_without_the_secret()
    {
        // Every private key this Guardian has held, taken from the live provider: signing, three
        // generations of encryption keys (one retired), and the TLS key.
        var provider = (FileKeyProvider)_app.Services.GetRequiredService<IGuardianKeyProvider>();
        var scalars = new Dictionary<string, byte[]>(provider.ExportPrivateScalars());
        var first = provider.ActiveKey.Kid;
        for (int i = 0; i < 2; i++)
        {
            (await _admin.PostAsync("v1/keys/rotate", null)).EnsureSuccessStatusCode();
            foreach (var (kid, d) in provider.ExportPrivateScalars())
            {
                scalars[kid] = d;
            }
        }
        (await _admin.PostAsync($"v1/keys/{first}/retire", null)).EnsureSuccessStatusCode();
        var tlsKeyFile = await File.ReadAllBytesAsync(Path.Combine(_dir, "tls-key.p8"));
        using (var tls = ECDsa.Create())
        {
            tls.ImportEncryptedPkcs8PrivateKey(Secret, tlsKeyFile, out _);
            scalars["tls"] = tls.ExportParameters(true).D!;
        }
        Assert.Equal(5, scalars.Count);
        await _app.StopAsync();

        var copy = Directory.CreateTempSubdirectory("rempart-guardian-copy-").FullName;
        _cleanup.Add(copy);
        foreach (var f in Directory.GetFiles(_dir, "*", SearchOption.AllDirectories))
        {
            var to = Path.Combine(copy, Path.GetRelativePath(_dir, f));
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(f, to);
        }
        Assert.True(File.Exists(Path.Combine(copy, "guardian.db")));
        var copied = Directory.GetFiles(copy, "*", SearchOption.AllDirectories).Select(File.ReadAllBytes).ToList();
        foreach (var (name, d) in scalars)
        {
            foreach (var form in Forms(d))
            {
                Assert.False(copied.Any(bytes => bytes.AsSpan().IndexOf(form) >= 0), $"private key {name} found in the copied data folder");
            }
        }
        Assert.False(copied.Any(bytes => bytes.AsSpan().IndexOf(Secret) >= 0), "the secret is in the data folder");

        // The search is not blind: the same scan finds a scalar where one was planted.
        var control = Encoding.ASCII.GetBytes("x" + Convert.ToHexString(scalars["tls"]) + "x");
        Assert.Contains(Forms(scalars["tls"]), f => control.AsSpan().IndexOf(f) >= 0);

        // The copy holds the keys, encrypted: the wrong secret opens nothing, the right one the same keys.
        KeyChecks.Throws("keys.secret.wrong", () => FileKeyProvider.Open(copy, "someone-elses-secret-0123456789"u8).Dispose());
        using var reopened = FileKeyProvider.Open(copy, Secret);
        Assert.Equal(scalars[reopened.ActiveKey.Kid], reopened.ExportPrivateScalars()[reopened.ActiveKey.Kid]);
    }

    /// <summary>The shapes a scalar could be written in: raw, hex either case, base64, base64url.</summary>
    private static byte[][] Forms(byte[] d) =>
    [
        d,
        Encoding.ASCII.GetBytes(Convert.ToHexStringLower(d)),
        Encoding.ASCII.GetBytes(Convert.ToHexString(d)),
        Encoding.ASCII.GetBytes(Convert.ToBase64String(d).TrimEnd('=')),
        Encoding.ASCII.GetBytes(Base64Url.EncodeToString(d)),
    ];
}

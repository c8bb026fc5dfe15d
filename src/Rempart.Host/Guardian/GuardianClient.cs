using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.Attestation.Protocol;

namespace Rempart.Host.Guardian;

/// <summary>A Guardian refusal or error, with its stable problem id (RFC 9457 "title").</summary>
public sealed class GuardianException(string id, string message, int status) : Exception(message)
{
    public string Id { get; } = id;

    public int Status { get; } = status;
}

/// <summary>
/// HTTP client for the Guardian. HTTPS connections are pinned to the Guardian's certificate
/// fingerprint (SHA-256 of the DER) when one is given; plain HTTP is accepted only for loopback.
/// </summary>
public sealed class GuardianClient : IDisposable
{
    private readonly HttpClient _http;

    public GuardianClient(Uri baseUrl, string? fingerprintHex = null, string? apiToken = null)
    {
        if (baseUrl.Scheme == "http" && !baseUrl.IsLoopback)
        {
            throw new ArgumentException($"refusing plain HTTP to {baseUrl.Host}: use https (plain HTTP is for loopback only)");
        }
        var handler = new HttpClientHandler();
        if (fingerprintHex is { Length: > 0 })
        {
            var pin = Convert.FromHexString(fingerprintHex.Replace(":", "", StringComparison.Ordinal));
            handler.ServerCertificateCustomValidationCallback = (_, cert, _, _) =>
                cert is not null && CryptographicOperations.FixedTimeEquals(SHA256.HashData(cert.RawData), pin);
        }
        _http = new HttpClient(handler) { BaseAddress = baseUrl, Timeout = TimeSpan.FromSeconds(60) };
        if (apiToken is { Length: > 0 })
        {
            _http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", apiToken);
        }
    }

    public Task<EnrolmentChallenge> StartEnrolmentAsync(EnrolmentRequest req, CancellationToken ct = default) =>
        PostAsync<EnrolmentChallenge>("v1/enrolments", req, ct);

    public Task<EnrolmentResult> ActivateAsync(string enrolmentId, EnrolmentActivation act, CancellationToken ct = default) =>
        PostAsync<EnrolmentResult>($"v1/enrolments/{Uri.EscapeDataString(enrolmentId)}/activate", act, ct);

    public Task<NonceResponse> NonceAsync(string hostId, CancellationToken ct = default) =>
        PostAsync<NonceResponse>("v1/attestations/nonce", new NonceRequest(hostId), ct);

    public Task<AttestationResult> AttestAsync(AttestationEvidence evidence, CancellationToken ct = default) =>
        PostAsync<AttestationResult>("v1/attestations", evidence, ct);

    /// <summary>Asks for a VM's key with its key protector and this host's health token (docs/key-release.md).</summary>
    public Task<ReleaseResponse> ReleaseAsync(ReleaseRequest request, CancellationToken ct = default) =>
        PostAsync<ReleaseResponse>("v1/releases", request, ct);

    /// <summary>The source host asks the Guardian to authorise a live migration (docs/migration.md).</summary>
    public Task<MigrationAuthorisation> AuthoriseMigrationAsync(MigrationAuthoriseRequest request, CancellationToken ct = default) =>
        PostAsync<MigrationAuthorisation>("v1/migrations", request, ct);

    /// <summary>The destination host asks whether a migration is a live one to it (releases nothing).</summary>
    public Task<MigrationCheck> CheckMigrationAsync(string migrationId, MigrationCheckRequest request, CancellationToken ct = default) =>
        PostAsync<MigrationCheck>($"v1/migrations/{Uri.EscapeDataString(migrationId)}/check", request, ct);

    /// <summary>The destination host accepts an authorised migration and gets its release.</summary>
    public Task<MigrationAcceptance> AcceptMigrationAsync(string migrationId, MigrationAcceptRequest request, CancellationToken ct = default) =>
        PostAsync<MigrationAcceptance>($"v1/migrations/{Uri.EscapeDataString(migrationId)}/accept", request, ct);

    /// <summary>The source host reports how a migration ended (audited).</summary>
    public Task CompleteMigrationAsync(string migrationId, MigrationCompleteRequest request, CancellationToken ct = default) =>
        PostJsonAsync($"v1/migrations/{Uri.EscapeDataString(migrationId)}/complete", request, ct);

    public Task<JsonNode> GetAsync(string path, CancellationToken ct = default) => SendAsync(new HttpRequestMessage(HttpMethod.Get, path), ct);

    public Task<JsonNode> PostJsonAsync(string path, object body, CancellationToken ct = default) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent.Create(body) }, ct);

    /// <summary>Any verb (DELETE, PATCH …) with an optional JSON body; the answer as JSON.</summary>
    public Task<JsonNode> SendJsonAsync(HttpMethod method, string path, object? body, CancellationToken ct = default) =>
        SendAsync(new HttpRequestMessage(method, path) { Content = body is null ? null : JsonContent.Create(body) }, ct);

    /// <summary>GETs a document as the Guardian wrote it (signed documents must not be re-serialized).</summary>
    public Task<string> GetTextAsync(string path, CancellationToken ct = default) =>
        SendForTextAsync(new HttpRequestMessage(HttpMethod.Get, path), ct);

    /// <summary>POSTs JSON and returns the answer as text (e.g. a YAML policy baseline).</summary>
    public Task<string> PostForTextAsync(string path, object body, CancellationToken ct = default) =>
        SendForTextAsync(new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent.Create(body) }, ct);

    private async Task<T> PostAsync<T>(string path, object body, CancellationToken ct)
    {
        var node = await SendAsync(new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent.Create(body) }, ct);
        return node.Deserialize<T>() ?? throw new GuardianException("response.empty", $"{path}: empty answer", 0);
    }

    private async Task<JsonNode> SendAsync(HttpRequestMessage request, CancellationToken ct) =>
        TryParse(await SendForTextAsync(request, ct)) ?? throw new GuardianException("response.format", "the Guardian's answer is not JSON", 200);

    /// <summary>Sends, and returns the body of a success; a failure becomes a <see cref="GuardianException"/> with the problem's id and detail.</summary>
    private async Task<string> SendForTextAsync(HttpRequestMessage request, CancellationToken ct)
    {
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, ct);
        }
        catch (HttpRequestException e)
        {
            throw new GuardianException("guardian.unreachable", $"cannot reach the Guardian at {_http.BaseAddress}: {e.Message}", 0);
        }
        using (response)
        {
            var text = await response.Content.ReadAsStringAsync(ct);
            if (!response.IsSuccessStatusCode)
            {
                var node = TryParse(text);
                throw new GuardianException(node?["title"]?.GetValue<string>() ?? $"http.{(int)response.StatusCode}",
                    node?["detail"]?.GetValue<string>() ?? response.ReasonPhrase ?? "error", (int)response.StatusCode);
            }
            return text;
        }
    }

    private static JsonNode? TryParse(string text)
    {
        try
        {
            return text.Length > 0 ? JsonNode.Parse(text) : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    public void Dispose() => _http.Dispose();
}

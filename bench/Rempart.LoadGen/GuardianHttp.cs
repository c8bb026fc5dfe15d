using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Rempart.Attestation.Protocol;

namespace Rempart.LoadGen;

/// <summary>A refusal or error from the Guardian: the problem document's id (RFC 9457 title), or a client-side id.</summary>
public sealed class GuardianError(string id, string message, int status) : Exception(message)
{
    public string Id { get; } = id;

    public int Status { get; } = status;
}

/// <summary>The problem document the Guardian answers errors with.</summary>
public sealed record ProblemDocument(
    [property: JsonPropertyName("title")] string? Title,
    [property: JsonPropertyName("detail")] string? Detail);

[JsonSerializable(typeof(EnrolmentRequest))]
[JsonSerializable(typeof(EnrolmentChallenge))]
[JsonSerializable(typeof(EnrolmentActivation))]
[JsonSerializable(typeof(EnrolmentResult))]
[JsonSerializable(typeof(NonceRequest))]
[JsonSerializable(typeof(NonceResponse))]
[JsonSerializable(typeof(AttestationEvidence))]
[JsonSerializable(typeof(AttestationResult))]
[JsonSerializable(typeof(ProblemDocument))]
internal sealed partial class WireJson : JsonSerializerContext;

/// <summary>
/// The load generator's HTTPS client for the Guardian: the same wire types and pinning as the host
/// library's GuardianClient (the certificate's SHA-256 must equal the fingerprint the Guardian
/// printed), with what a load test needs on top: one pooled <see cref="SocketsHttpHandler"/> for
/// every simulated host, kept-alive HTTP/1.1 connections (one per concurrent host) or HTTP/2,
/// and source-generated JSON so the client spends as little of the shared CPU as it can.
/// </summary>
public sealed class GuardianHttp : IDisposable
{
    // '+' and '/' of base64 are not escaped (the default encoder writes '+' as \u002B): same data, smaller bodies.
    private static readonly WireJson Json = new(new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });

    private readonly HttpClient _http;
    private readonly Version _version;

    /// <param name="baseUrl">The Guardian's address.</param>
    /// <param name="fingerprintHex">SHA-256 of the Guardian's certificate (DER), hex; required for HTTPS.</param>
    /// <param name="maxConnections">HTTP/1.1 connections kept open (one per concurrent host).</param>
    /// <param name="http2">HTTP/2 (multiplexed) instead of HTTP/1.1.</param>
    /// <param name="adminToken">Bearer token for the admin API, or null.</param>
    public GuardianHttp(Uri baseUrl, string? fingerprintHex, int maxConnections = 256, bool http2 = false, string? adminToken = null)
    {
        ArgumentNullException.ThrowIfNull(baseUrl);
        if (baseUrl.Scheme == "http" && !baseUrl.IsLoopback)
        {
            throw new ArgumentException("plain HTTP is for loopback only");
        }
        var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = maxConnections,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            EnableMultipleHttp2Connections = true,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
        };
        if (baseUrl.Scheme == "https")
        {
            if (fingerprintHex is not { Length: 64 })
            {
                throw new ArgumentException("HTTPS needs the Guardian's certificate fingerprint (SHA-256, hex) to pin");
            }
            var pin = Convert.FromHexString(fingerprintHex);
            handler.SslOptions = new SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, cert, _, _) =>
                    cert is not null && CryptographicOperations.FixedTimeEquals(SHA256.HashData(cert.GetRawCertData()), pin),
            };
        }
        _version = http2 ? HttpVersion.Version20 : HttpVersion.Version11;
        _http = new HttpClient(handler)
        {
            BaseAddress = baseUrl,
            Timeout = TimeSpan.FromSeconds(60),
            DefaultRequestVersion = _version,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        if (adminToken is { Length: > 0 })
        {
            _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", adminToken);
        }
    }

    public Task<EnrolmentChallenge> StartEnrolmentAsync(EnrolmentRequest request, CancellationToken ct = default) =>
        PostAsync("v1/enrolments", request, Json.EnrolmentRequest, Json.EnrolmentChallenge, ct);

    public Task<EnrolmentResult> ActivateAsync(string enrolmentId, EnrolmentActivation activation, CancellationToken ct = default) =>
        PostAsync($"v1/enrolments/{Uri.EscapeDataString(enrolmentId)}/activate", activation, Json.EnrolmentActivation, Json.EnrolmentResult, ct);

    public Task<NonceResponse> NonceAsync(string hostId, CancellationToken ct = default) =>
        PostAsync("v1/attestations/nonce", new NonceRequest(hostId), Json.NonceRequest, Json.NonceResponse, ct);

    public Task<AttestationResult> AttestAsync(AttestationEvidence evidence, CancellationToken ct = default) =>
        PostAsync("v1/attestations", evidence, Json.AttestationEvidence, Json.AttestationResult, ct);

    /// <summary>An admin call with a JSON body; the answer as JSON.</summary>
    public async Task<JsonNode> AdminPostAsync(string path, JsonObject body, CancellationToken ct = default)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent(System.Text.Encoding.UTF8.GetBytes(body.ToJsonString())) };
        return JsonNode.Parse(await SendAsync(request, ct)) ?? new JsonObject();
    }

    public async Task<string> GetTextAsync(string path, CancellationToken ct = default)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        return System.Text.Encoding.UTF8.GetString(await SendAsync(request, ct));
    }

    /// <summary>POST a JSON body (source-generated types) and read the JSON answer; a refusal throws <see cref="GuardianError"/> with its problem id.</summary>
    public async Task<TResponse> PostAsync<TRequest, TResponse>(string path, TRequest body, JsonTypeInfo<TRequest> requestType,
        JsonTypeInfo<TResponse> responseType, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent(JsonSerializer.SerializeToUtf8Bytes(body, requestType)) };
        var bytes = await SendAsync(request, ct);
        try
        {
            return JsonSerializer.Deserialize(bytes, responseType) ?? throw new GuardianError("client.response-empty", $"{path}: empty answer", 200);
        }
        catch (JsonException e)
        {
            throw new GuardianError("client.response-format", $"{path}: {e.Message}", 200);
        }
    }

    private async Task<byte[]> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        request.Version = _version;
        request.VersionPolicy = HttpVersionPolicy.RequestVersionExact;
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, HttpCompletionOption.ResponseContentRead, ct);
        }
        catch (HttpRequestException e)
        {
            throw new GuardianError("client.http", $"{request.RequestUri}: {e.Message}", 0);
        }
        catch (TaskCanceledException e) when (!ct.IsCancellationRequested)
        {
            throw new GuardianError("client.timeout", $"{request.RequestUri}: {e.Message}", 0);
        }
        using (response)
        {
            var bytes = await response.Content.ReadAsByteArrayAsync(ct);
            if (!response.IsSuccessStatusCode)
            {
                ProblemDocument? problem = null;
                try
                {
                    problem = bytes.Length > 0 ? JsonSerializer.Deserialize(bytes, Json.ProblemDocument) : null;
                }
                catch (JsonException)
                {
                }
                throw new GuardianError(problem?.Title ?? $"http.{(int)response.StatusCode}", problem?.Detail ?? response.ReasonPhrase ?? "error", (int)response.StatusCode);
            }
            return bytes;
        }
    }

    private static ByteArrayContent JsonContent(byte[] body)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        return content;
    }

    public void Dispose() => _http.Dispose();
}

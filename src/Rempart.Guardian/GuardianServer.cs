using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using System.Threading.RateLimiting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Rempart.Guardian.Api;
using Rempart.Guardian.Attestation;
using Rempart.Guardian.Enrolment;
using Rempart.Guardian.Keys;
using Rempart.Guardian.Storage;
using Rempart.Guardian.Tokens;
using Rempart.KeyProtection;

namespace Rempart.Guardian;

/// <summary>How to run the Guardian: where to listen, which store, which secret protects its keys at rest, which key provider (default: file).</summary>
public sealed record ServeOptions(GuardianOptions Guardian, IPEndPoint Listen, bool InsecureHttp, string? PostgresConnection, byte[] KeySecret, KeyProviderOptions? Keys = null);

/// <summary>Builds the Guardian web application: storage, keys, services, the API, HTTPS.</summary>
public static class GuardianServer
{
    public static async Task<WebApplication> BuildAsync(ServeOptions serve, TimeProvider? timeProvider = null, Action<string>? log = null)
    {
        log ??= Console.Out.WriteLine;
        var time = timeProvider ?? TimeProvider.System;
        var opts = serve.Guardian;
        Directory.CreateDirectory(opts.DataDir);
        if (serve.InsecureHttp && !IPAddress.IsLoopback(serve.Listen.Address))
        {
            throw new InvalidOperationException("plain HTTP is only allowed on a loopback address");
        }

        IGuardianStore store = serve.PostgresConnection is { Length: > 0 } pg
            ? new PostgresGuardianStore(pg)
            : new SqliteGuardianStore(opts.DataDir);
        await store.MigrateAsync();
        var keys = (serve.Keys ?? new KeyProviderOptions()).Open(opts.DataDir, serve.KeySecret, time);
        if (keys is FileKeyProvider && OpenSslEcdh.Unavailable is { } why)
        {
            // Said once per process: the probe runs once.
            log($"guardian: ECDH through .NET's DeriveRawSecretAgreement, which checks the peer key again in every derivation ({why}): same keys, more CPU per release");
        }
        var adminFile = await AdminAuth.EnsureAdminTokenAsync(store, opts.DataDir, time);

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddJsonConsole();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.AddSingleton(store);
        // A body that does not bind (bad JSON, wrong types) throws, so that the exception handler answers request.invalid like every other unreadable request.
        builder.Services.Configure<Microsoft.AspNetCore.Routing.RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
        builder.Services.AddSingleton(opts);
        builder.Services.AddSingleton(time);
        builder.Services.AddSingleton(keys);
        builder.Services.AddSingleton<IGuardianKeyOperations>(keys);
        builder.Services.AddSingleton(new HealthTokens(keys, opts.Issuer));
        builder.Services.AddSingleton<Audit>();
        builder.Services.AddSingleton<EnrolmentService>();
        builder.Services.AddSingleton<PolicyCatalog>();
        builder.Services.AddSingleton<AttestationService>();
        builder.Services.AddSingleton<AdminAuth>();
        builder.Services.AddSingleton<Release.ReleaseService>();
        builder.Services.AddSingleton<Release.MigrationService>();
        builder.Services.ConfigureHttpJsonOptions(j => j.SerializerOptions.TypeInfoResolverChain.Insert(0, GuardianJson.Default));
        builder.Services.AddProblemDetails();
        builder.Services.AddOpenApi("v1");
        // Per-client request budget: generous for a fleet behind one NAT, bounded for a flood.
        builder.Services.AddRateLimiter(r =>
        {
            r.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
            r.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(http => opts.RateLimitPerSecond == 0
                ? RateLimitPartition.GetNoLimiter("all")
                : RateLimitPartition.GetFixedWindowLimiter(http.Connection.RemoteIpAddress?.ToString() ?? "unknown",
                    _ => new FixedWindowRateLimiterOptions { PermitLimit = opts.RateLimitPerSecond * 10, Window = TimeSpan.FromSeconds(10), QueueLimit = 0 }));
        });
        Ops.OpsRegistration.AddGuardianOps(builder.Services);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = 1 << 20;
            k.AddServerHeader = false;
            k.Listen(serve.Listen, l =>
            {
                if (!serve.InsecureHttp)
                {
                    var cert = TlsCertificate.LoadOrCreate(opts.DataDir, serve.KeySecret);
                    log($"guardian: TLS certificate SHA-256 fingerprint {Convert.ToHexStringLower(SHA256.HashData(cert.RawData))}");
                    l.UseHttps(cert);
                }
                l.Protocols = HttpProtocols.Http1AndHttp2;
            });
        });
        var app = builder.Build();
        app.Lifetime.ApplicationStopped.Register(() =>
        {
            store.DisposeAsync().AsTask().GetAwaiter().GetResult();
            keys.Dispose();
        });
        app.UseExceptionHandler(e => e.Run(async http =>
        {
            var error = http.Features.Get<Microsoft.AspNetCore.Diagnostics.IExceptionHandlerFeature>()?.Error;
            if (error is null or Microsoft.AspNetCore.Http.BadHttpRequestException or System.Text.Json.JsonException)
            {
                // Bad JSON and the like: the client's fault, one problem document, never a stack trace.
                await Problems.Of("request.invalid", "the request could not be read").ExecuteAsync(http);
                return;
            }
            // Anything else is the Guardian's fault: 500, and the operator gets the type and message in the log
            // (the client gets neither: a message could name internals). No key material is put in exception messages.
            http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger("Rempart.Guardian")
                .LogError("{Method} {Path}: {Type}: {Message}", http.Request.Method, http.Request.Path, error.GetType().Name, error.Message);
            await Problems.Of("internal", "the Guardian failed to handle this request; the operator's log has the cause", StatusCodes.Status500InternalServerError).ExecuteAsync(http);
        }));
        app.UseStatusCodePages();
        app.UseRateLimiter();
        app.MapOpenApi("/openapi/{documentName}.json");
        Endpoints.Map(app);
        log($"guardian: data in {opts.DataDir}, store {(serve.PostgresConnection is null ? "SQLite" : "PostgreSQL")}, admin token in {adminFile}");
        return app;
    }
}

/// <summary>
/// The Guardian's self-signed TLS certificate (replaceable by the operator's): the certificate in
/// PEM, its private key as an encrypted PKCS#8 file keyed by the Guardian's secret, like the
/// token-signing key — never in clear on disk.
/// </summary>
public static class TlsCertificate
{
    private static readonly PbeParameters Pbe = new(PbeEncryptionAlgorithm.Aes256Cbc, HashAlgorithmName.SHA256, 600_000);

    public static X509Certificate2 LoadOrCreate(string dataDir, byte[] secret)
    {
        var certPath = Path.Combine(dataDir, "tls-cert.pem");
        var keyPath = Path.Combine(dataDir, "tls-key.p8");
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        if (File.Exists(certPath) && File.Exists(keyPath))
        {
            try
            {
                key.ImportEncryptedPkcs8PrivateKey(secret, File.ReadAllBytes(keyPath), out _);
            }
            catch (CryptographicException)
            {
                throw new InvalidOperationException($"cannot decrypt {keyPath}: wrong key secret, or the file is damaged");
            }
            using var existing = X509Certificate2.CreateFromPem(File.ReadAllText(certPath));
            return WithKey(existing, key);
        }
        var req = new CertificateRequest("CN=rempart-guardian", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        san.AddDnsName(Dns.GetHostName());
        req.CertificateExtensions.Add(san.Build());
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using var cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddYears(2));
        WritePrivate(keyPath, key.ExportEncryptedPkcs8PrivateKey(secret, Pbe));
        File.WriteAllText(certPath, cert.ExportCertificatePem());
        using var publicOnly = X509CertificateLoader.LoadCertificate(cert.RawData);
        return WithKey(publicOnly, key);
    }

    private static X509Certificate2 WithKey(X509Certificate2 cert, ECDsa key)
    {
        // Kestrel on Linux wants an exportable in-memory key: round-trip through an ephemeral PKCS#12.
        using var withKey = cert.CopyWithPrivateKey(key);
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }

    private static void WritePrivate(string path, byte[] bytes)
    {
        using var f = new FileStream(path, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite });
        f.Write(bytes);
    }
}

using System.Text.Json;
using System.Text.Json.Serialization;
using Rempart.KeyProtection;

namespace Rempart.Guardian.Keys;

/// <summary>
/// The provider's small bookkeeping file (<c>DIR/keys/&lt;kind&gt;-keys.json</c>, 0600, written
/// atomically): which public keys exist, their status and creation time. It holds no secret; the
/// private keys are in their own encrypted files or in the token. A key id in it is checked against
/// the public key it names on every load, so an edited file cannot relabel a key.
/// </summary>
internal sealed record KeyRegistry
{
    public int Version { get; init; } = 1;

    public required string Provider { get; init; }

    public string? SigningKid { get; init; }

    public string? SigningPublicKey { get; init; }

    public List<KeyRegistryEntry> EncryptionKeys { get; init; } = [];

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    public static KeyRegistry? Load(string path, string provider)
    {
        if (!File.Exists(path))
        {
            return null;
        }
        KeyRegistry? registry;
        try
        {
            registry = JsonSerializer.Deserialize<KeyRegistry>(File.ReadAllBytes(path), Json);
        }
        catch (JsonException e)
        {
            throw new KeyProviderException("keys.registry", $"{path} is not a key registry ({e.Message}): restore it from a backup, or move it away to re-adopt the key files beside it", e);
        }
        if (registry is null || registry.Version != 1 || registry.Provider != provider)
        {
            throw new KeyProviderException("keys.registry", $"{path} is not a version 1 registry of the {provider} key provider");
        }
        foreach (var e in registry.EncryptionKeys)
        {
            if (KidOf(e.SpkiBytes) != e.Kid)
            {
                throw new KeyProviderException("keys.registry", $"{path}: key {e.Kid} does not match the public key recorded for it");
            }
        }
        return registry;
    }

    public void Save(string path) => AtomicFile.Write(path, JsonSerializer.SerializeToUtf8Bytes(this, Json));

    /// <summary>base64url(SHA-256(SPKI DER)), first 22 characters: the rule every Guardian key id follows (<see cref="KeyIds.Of"/>).</summary>
    public static string KidOf(ReadOnlySpan<byte> spki) => KeyIds.Of(spki);
}

/// <summary>One encryption key in the registry.</summary>
internal sealed record KeyRegistryEntry(string Kid, string Spki, GuardianKeyStatus Status, DateTimeOffset CreatedAt, DateTimeOffset? RetiredAt = null)
{
    [JsonIgnore]
    public byte[] SpkiBytes => Convert.FromBase64String(Spki);

    public GuardianKeyInfo ToInfo() => new(Kid, SpkiBytes, Status, CreatedAt);
}

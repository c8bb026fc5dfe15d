using System.Buffers.Text;
using System.Security.Cryptography;

namespace Rempart.KeyProtection;

/// <summary>Key identifiers and the syntax of the names a key protector carries.</summary>
public static class KeyIds
{
    /// <summary>Length of a key id: 22 base64url characters (132 bits of the SPKI's SHA-256).</summary>
    public const int KidLength = 22;

    /// <summary>
    /// The key id of a public key: the first 22 characters of base64url(SHA-256(SubjectPublicKeyInfo)),
    /// the same rule as the Guardian's token-signing <c>kid</c>.
    /// </summary>
    public static string Of(ReadOnlySpan<byte> subjectPublicKeyInfo) =>
        Base64Url.EncodeToString(SHA256.HashData(subjectPublicKeyInfo))[..KidLength];

    /// <summary>22 characters of the base64url alphabet.</summary>
    public static bool IsKid(string? s) => s is { Length: KidLength } && s.All(IsBase64UrlChar);

    /// <summary>SHA-256 of a public key's SPKI, lowercase hex: what a tenant compares out of band.</summary>
    public static string Fingerprint(ReadOnlySpan<byte> subjectPublicKeyInfo) =>
        Convert.ToHexStringLower(SHA256.HashData(subjectPublicKeyInfo));

    /// <summary>A VM, host group or Guardian id: 1-<paramref name="max"/> ASCII letters, digits, '.', '-' or '_', not starting with '.'.</summary>
    public static bool IsName(string? s, int max = 64) =>
        s is { Length: > 0 } && s.Length <= max && s[0] != '.' && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_');

    private static bool IsBase64UrlChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '-' or '_';
}

using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using System.Security.Cryptography;

namespace Rempart.Tpm.Crypto;

/// <summary>
/// libcrypto.so.3 called directly, below .NET's crypto API (<see cref="OpenSslRsa"/>, the Guardian's
/// OpenSslEcdh): whether it can be in this process, and OpenSSL's error queue.
/// </summary>
[SupportedOSPlatform("linux")]
public static class OpenSslLibrary
{
    public const string Name = "libcrypto.so.3";

    /// <summary>
    /// Why <paramref name="symbols"/> of libcrypto.so.3 cannot be called in this process (null: they
    /// can): the library does not load, a function is missing, or it is not the OpenSSL .NET uses (an
    /// EVP_PKEY from one library handed to another would be undefined).
    /// </summary>
    public static string? Problem(IEnumerable<string> symbols)
    {
        if (!NativeLibrary.TryLoad(Name, out var lib))
        {
            return $"{Name} does not load";
        }
        foreach (var symbol in symbols.Append("OpenSSL_version_num").Append("ERR_get_error").Append("ERR_clear_error"))
        {
            if (!NativeLibrary.TryGetExport(lib, symbol, out _))
            {
                return $"{Name} has no {symbol}";
            }
        }
        long dotnet = SafeEvpPKeyHandle.OpenSslVersion, ours = (long)OpenSSL_version_num();
        return dotnet == ours ? null : $".NET uses OpenSSL 0x{dotnet:x}, {Name} is 0x{ours:x}";
    }

    /// <summary>The oldest error on OpenSSL's queue for this thread, then the queue cleared (the code names a reason: <c>openssl errstr CODE</c>; nothing secret).</summary>
    public static ulong TakeError()
    {
        var code = ERR_get_error();
        ERR_clear_error();
        return code;
    }

    [DllImport(Name)]
    private static extern nuint OpenSSL_version_num();

    [DllImport(Name)]
    private static extern nuint ERR_get_error();

    [DllImport(Name)]
    private static extern void ERR_clear_error();
}

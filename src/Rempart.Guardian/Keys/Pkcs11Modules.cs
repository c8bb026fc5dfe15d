using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using Rempart.KeyProtection;

namespace Rempart.Guardian.Keys;

/// <summary>
/// One loaded PKCS#11 module per path and process. C_Initialize and C_Finalize act on the whole
/// module (PKCS#11 v2.40 §5.4), so two providers on the same module must share one initialisation:
/// the module is finalised and unloaded when the last user lets it go.
/// </summary>
internal static class Pkcs11Modules
{
    private static readonly Lock Gate = new();
    private static readonly Dictionary<string, (IPkcs11Library Library, int Users)> Loaded = new(StringComparer.Ordinal);

    public static Pkcs11InteropFactories Factories { get; } = new();

    static Pkcs11Modules()
    {
        // Pkcs11Interop 5.3 calls dlopen through "libdl", a name only development packages install;
        // glibc ships it as libdl.so.2 (and in libc itself since 2.34).
        System.Runtime.InteropServices.NativeLibrary.SetDllImportResolver(typeof(Pkcs11InteropFactories).Assembly, (name, assembly, path) =>
            name == "libdl" && System.Runtime.InteropServices.NativeLibrary.TryLoad("libdl.so.2", assembly, path, out var handle) ? handle : IntPtr.Zero);
    }

    public static IPkcs11Library Acquire(string modulePath)
    {
        var path = Path.GetFullPath(modulePath);
        lock (Gate)
        {
            if (Loaded.TryGetValue(path, out var entry))
            {
                Loaded[path] = (entry.Library, entry.Users + 1);
                return entry.Library;
            }
            if (!File.Exists(path))
            {
                throw new KeyProviderException("keys.pkcs11.module", $"no PKCS#11 module at {path}: check --pkcs11-module (SoftHSM2 on Debian: /usr/lib/softhsm/libsofthsm2.so, package softhsm2)");
            }
            IPkcs11Library library;
            try
            {
                library = Factories.Pkcs11LibraryFactory.LoadPkcs11Library(Factories, path, AppType.MultiThreaded);
            }
            catch (Pkcs11Exception e)
            {
                throw new KeyProviderException("keys.pkcs11.initialize",
                    $"the PKCS#11 module {path} did not initialise ({e.Method}: {e.RV}); for SoftHSM2, check that SOFTHSM2_CONF names a readable configuration and token folder", e);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                throw new KeyProviderException("keys.pkcs11.module", $"cannot load the PKCS#11 module {path} ({e.Message}): is it a PKCS#11 library for this architecture?", e);
            }
            Loaded[path] = (library, 1);
            return library;
        }
    }

    public static void Release(IPkcs11Library library)
    {
        lock (Gate)
        {
            foreach (var (path, entry) in Loaded)
            {
                if (ReferenceEquals(entry.Library, library))
                {
                    if (entry.Users > 1)
                    {
                        Loaded[path] = (library, entry.Users - 1);
                    }
                    else
                    {
                        Loaded.Remove(path);
                        library.Dispose();
                    }
                    return;
                }
            }
        }
    }
}

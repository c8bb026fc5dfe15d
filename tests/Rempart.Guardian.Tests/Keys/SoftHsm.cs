using System.Runtime.InteropServices;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Guardian.Tests.Keys;

/// <summary>
/// A private SoftHSM2 (a real PKCS#11 module) for this test process, made by the project's
/// scripts/softhsm.sh: one configuration, one token per label below, each with its user PIN in a
/// 0600 file. SoftHSM2 reads SOFTHSM2_CONF when the module initialises, so the variable is set in
/// the native environment before any test loads it. A missing softhsm2 fails the tests (the
/// script exits non-zero); it never skips them.
/// </summary>
public static class SoftHsm
{
    /// <summary>One token per test that needs its own (tokens are made before the module first loads).</summary>
    public static readonly string[] Labels = ["roundtrip", "restart", "rotation", "wrongpin", "concurrent", "guardian", "guardian-e2e"];

    private static readonly Lazy<(string Dir, string Module)> Instance = new(Create);

    public static string Dir => Instance.Value.Dir;

    public static string Module => Instance.Value.Module;

    public static string Conf => Path.Combine(Dir, "softhsm2.conf");

    /// <summary>The environment the independent tools (pkcs11-tool) need to see the same tokens.</summary>
    public static Dictionary<string, string> Env => new() { ["SOFTHSM2_CONF"] = Conf };

    public static string PinFile(string label) => Path.Combine(Dir, label + ".user-pin");

    public static string Pin(string label) => File.ReadAllText(PinFile(label)).Trim();

    public static string Script([System.Runtime.CompilerServices.CallerFilePath] string source = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(source)!, "..", "..", "..", "scripts", "softhsm.sh"));

    private static (string, string) Create()
    {
        var dir = Directory.CreateTempSubdirectory("rempart-softhsm-").FullName;
        string module = "";
        foreach (var label in Labels)
        {
            module = Tool.Run("bash", [Script(), dir, label]).Ok().Stdout.Trim();
        }
        if (SetEnv("SOFTHSM2_CONF", Path.Combine(dir, "softhsm2.conf"), 1) != 0)
        {
            throw new InvalidOperationException("setenv(SOFTHSM2_CONF) failed");
        }
        return (dir, module);
    }

    [DllImport("libc", EntryPoint = "setenv")]
    private static extern int SetEnv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);
}

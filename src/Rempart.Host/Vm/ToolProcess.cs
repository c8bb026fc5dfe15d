using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;

namespace Rempart.Host.Vm;

/// <summary>
/// Runs qemu-img, swtpm_setup and friends. A secret reaches the child only through a pipe: it is
/// written to the child's stdin and the pipe is closed (the tool reads <c>/dev/stdin</c>, or, with
/// secretFd 3, a <c>/bin/sh</c> prologue <c>exec "$0" "$@" 3&lt;&amp;0 &lt;/dev/null</c>
/// moves the pipe to descriptor 3 for tools that spawn helpers on their stdin). Never argv, never a
/// file. .NET creates the pipe close-on-exec and dup2()s it in the child only, so no other child
/// process of the agent inherits it.
/// </summary>
internal static class ToolProcess
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    public static string Which(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
                     .Concat(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]))
        {
            var p = Path.Combine(dir, name);
            if (File.Exists(p))
            {
                return p;
            }
        }
        throw new VmBundleException("tool.missing", $"'{name}' is not installed (scripts/setup.sh installs it)");
    }

    /// <summary>
    /// Runs <paramref name="tool"/>. <paramref name="secret"/>, when given, is written to the child's
    /// stdin (then the pipe is closed); the caller keeps and wipes its buffer.
    /// <paramref name="onOutput"/> sees stdout in pieces split at CR and LF (qemu-img -p).
    /// </summary>
    public static Result Run(string tool, IReadOnlyList<string> args, ReadOnlySpan<byte> secret = default, int secretFd = 0,
        Action<string>? onOutput = null, TimeSpan? timeout = null, CancellationToken cancel = default)
    {
        var psi = StartInfo(tool, args, secretFd);
        psi.RedirectStandardInput = true;
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        using var p = Process.Start(psi) ?? throw new VmBundleException("tool.missing", $"cannot start {tool}");
        var stderr = p.StandardError.ReadToEndAsync(CancellationToken.None);
        var stdout = Task.Run(() => ReadOutput(p.StandardOutput, onOutput), CancellationToken.None);
        try
        {
            var stdin = p.StandardInput.BaseStream;
            if (!secret.IsEmpty)
            {
                stdin.Write(secret);
                stdin.Flush();
            }
            p.StandardInput.Close();
        }
        catch (IOException)
        {
            // The tool exited before reading its stdin; its exit status says why.
        }
        using (cancel.Register(() => Kill(p)))
        {
            if (!p.WaitForExit(timeout ?? TimeSpan.FromMinutes(30)))
            {
                Kill(p);
                throw new VmBundleException("disk.tool", $"{tool} did not finish in time");
            }
        }
        p.WaitForExit();
        cancel.ThrowIfCancellationRequested();
        return new Result(p.ExitCode, stdout.GetAwaiter().GetResult(), stderr.GetAwaiter().GetResult());
    }

    /// <summary>Starts a long-running tool with <paramref name="secret"/> on its stdin (closed after), stderr redirected.</summary>
    public static Process Start(string tool, IReadOnlyList<string> args, ReadOnlySpan<byte> secret, int secretFd = 0)
    {
        var psi = StartInfo(tool, args, secretFd);
        psi.RedirectStandardInput = true;
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        var p = Process.Start(psi) ?? throw new VmBundleException("tool.missing", $"cannot start {tool}");
        try
        {
            p.StandardInput.BaseStream.Write(secret);
            p.StandardInput.BaseStream.Flush();
            p.StandardInput.Close();
        }
        catch (IOException)
        {
        }
        return p;
    }

    private static ProcessStartInfo StartInfo(string tool, IReadOnlyList<string> args, int secretFd)
    {
        string path = Which(tool);
        ProcessStartInfo psi;
        if (secretFd == 0)
        {
            psi = new ProcessStartInfo(path);
        }
        else if (secretFd == 3)
        {
            psi = new ProcessStartInfo(Which("sh"));
            psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add("exec \"$0\" \"$@\" 3<&0 </dev/null");
            psi.ArgumentList.Add(path);
        }
        else
        {
            throw new ArgumentOutOfRangeException(nameof(secretFd), "0 or 3");
        }
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        psi.UseShellExecute = false;
        psi.Environment["LC_ALL"] = "C";
        return psi;
    }

    private static string ReadOutput(StreamReader reader, Action<string>? onOutput)
    {
        var all = new StringBuilder();
        var piece = new StringBuilder();
        var buffer = new char[4096];
        int n;
        while ((n = reader.Read(buffer, 0, buffer.Length)) > 0)
        {
            for (int i = 0; i < n; i++)
            {
                char c = buffer[i];
                if (c is '\r' or '\n')
                {
                    if (piece.Length > 0)
                    {
                        onOutput?.Invoke(piece.ToString());
                        piece.Clear();
                    }
                }
                else
                {
                    piece.Append(c);
                }
            }
            if (all.Length < 1 << 20)
            {
                all.Append(buffer, 0, n);
            }
        }
        if (piece.Length > 0)
        {
            onOutput?.Invoke(piece.ToString());
        }
        return all.ToString();
    }

    private static void Kill(Process p)
    {
        try
        {
            p.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
        }
    }

    /// <summary>ASCII bytes of a key in the form a tool reads (base64 or hex); the caller wipes them.</summary>
    public static byte[] Ascii(ReadOnlySpan<byte> key, bool hex)
    {
        int len = hex ? key.Length * 2 : (key.Length + 2) / 3 * 4;
        var chars = new char[len];
        try
        {
            if (hex)
            {
                Convert.TryToHexStringLower(key, chars, out _);
            }
            else
            {
                Convert.TryToBase64Chars(key, chars, out _);
            }
            var bytes = new byte[len];
            Encoding.ASCII.GetBytes(chars, bytes);
            return bytes;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(System.Runtime.InteropServices.MemoryMarshal.AsBytes(chars.AsSpan()));
        }
    }
}

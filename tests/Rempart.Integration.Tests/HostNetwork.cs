using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Rempart.Tpm.Tests.Infrastructure;

namespace Rempart.Integration.Tests;

/// <summary>
/// Two hypervisor hosts' networks on one machine (issue 7 §2), made with <c>ip</c>: a bridge in the
/// root namespace at 10.X.0.254/24 (where the Guardian listens), two network namespaces
/// <c>rp-SUFFIX-a</c> / <c>-b</c> each joined to it by a veth (10.X.0.1 and 10.X.0.2, interface
/// <c>lan</c>), and a direct veth pair between the two namespaces, the migration link
/// (<c>mig</c>: 10.X.1.1/30 in a, 10.X.1.2/30 in b), so that a capture on it sees every byte
/// that crosses from one host to the other. X is random in 100-250 and unused in the root
/// namespace. Dispose removes everything, also after a partial creation, and kills the processes
/// left in the namespaces.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class HostNetwork : IDisposable
{
    /// <summary>The migration link's interface name, the same in both namespaces.</summary>
    public const string MigrationInterface = "mig";

    /// <summary>The interface joining each namespace to the bridge.</summary>
    public const string LanInterface = "lan";

    private bool _disposed;

    public HostNetwork()
    {
        Tool.Which("ip");
        Suffix = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
        Subnet = FreeSubnet();
        NamespaceA = $"rp-{Suffix}-a";
        NamespaceB = $"rp-{Suffix}-b";
        Bridge = $"rp{Suffix}br";
        try
        {
            Ip("link", "add", Bridge, "type", "bridge");
            Ip("addr", "add", $"{GuardianAddress}/24", "dev", Bridge);
            Ip("link", "set", Bridge, "up");
            Join(NamespaceA, $"rp{Suffix}a", HostAddressA);
            Join(NamespaceB, $"rp{Suffix}b", HostAddressB);
            Ip("-n", NamespaceA, "link", "add", MigrationInterface, "type", "veth", "peer", "name", MigrationInterface, "netns", NamespaceB);
            Ip("-n", NamespaceA, "addr", "add", $"{MigrationAddressA}/30", "dev", MigrationInterface);
            Ip("-n", NamespaceB, "addr", "add", $"{MigrationAddressB}/30", "dev", MigrationInterface);
            Ip("-n", NamespaceA, "link", "set", MigrationInterface, "up");
            Ip("-n", NamespaceB, "link", "set", MigrationInterface, "up");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The random part of every name (6 hex digits): interface names stay within 15 characters.</summary>
    public string Suffix { get; }

    /// <summary>X of 10.X.0.0/24 (bridge) and 10.X.1.0/30 (migration link).</summary>
    public int Subnet { get; }

    public string NamespaceA { get; }

    public string NamespaceB { get; }

    public string Bridge { get; }

    /// <summary>The bridge's address in the root namespace (10.X.0.254), for the Guardian.</summary>
    public IPAddress GuardianAddress => IPAddress.Parse($"10.{Subnet}.0.254");

    public IPAddress HostAddressA => IPAddress.Parse($"10.{Subnet}.0.1");

    public IPAddress HostAddressB => IPAddress.Parse($"10.{Subnet}.0.2");

    /// <summary>Namespace a's end of the migration link (10.X.1.1).</summary>
    public IPAddress MigrationAddressA => IPAddress.Parse($"10.{Subnet}.1.1");

    /// <summary>Namespace b's end of the migration link (10.X.1.2).</summary>
    public IPAddress MigrationAddressB => IPAddress.Parse($"10.{Subnet}.1.2");

    /// <summary>
    /// <paramref name="file"/> with <paramref name="args"/> inside namespace <paramref name="ns"/>
    /// (<c>ip netns exec</c>, which execs the program: the process id is the program's). Standard
    /// output and error are redirected: the caller reads them.
    /// </summary>
    public static ProcessStartInfo InNamespace(string ns, string file, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(Tool.Which("ip"))
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in (string[])["netns", "exec", ns, file, .. args])
        {
            psi.ArgumentList.Add(a);
        }
        return psi;
    }

    /// <summary>The processes in namespace <paramref name="ns"/> (none when it does not exist).</summary>
    public static IReadOnlyList<int> Pids(string ns)
    {
        var r = Tool.Run("ip", ["netns", "pids", ns]);
        return r.ExitCode != 0 ? [] : r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToList();
    }

    /// <summary>Runs <c>ip ARGS</c>; a failure throws with the command and ip's error output.</summary>
    public static string Ip(params string[] args)
    {
        var r = Tool.Run("ip", args);
        if (r.ExitCode != 0)
        {
            throw new InvalidOperationException($"'ip {string.Join(' ', args)}' failed with exit code {r.ExitCode}: {r.Stderr.Trim()}");
        }
        return r.Stdout;
    }

    /// <summary>A namespace with lo up, joined to the bridge by a veth (<paramref name="rootEnd"/> in the root namespace, <c>lan</c> inside).</summary>
    private void Join(string ns, string rootEnd, IPAddress address)
    {
        Ip("netns", "add", ns);
        Ip("-n", ns, "link", "set", "lo", "up");
        Ip("link", "add", rootEnd, "type", "veth", "peer", "name", LanInterface, "netns", ns);
        Ip("link", "set", rootEnd, "master", Bridge);
        Ip("link", "set", rootEnd, "up");
        Ip("-n", ns, "addr", "add", $"{address}/24", "dev", LanInterface);
        Ip("-n", ns, "link", "set", LanInterface, "up");
    }

    /// <summary>A random X in 100-250 such that no address or route of the root namespace is in 10.X.0.0/16.</summary>
    private static int FreeSubnet()
    {
        var used = Ip("-o", "addr", "show") + Ip("route", "show", "table", "all");
        for (int attempt = 0; attempt < 100; attempt++)
        {
            int x = RandomNumberGenerator.GetInt32(100, 251);
            if (!System.Text.RegularExpressions.Regex.IsMatch(used, $@"(^|[^0-9.])10\.{x}\.", System.Text.RegularExpressions.RegexOptions.Multiline))
            {
                return x;
            }
        }
        throw new InvalidOperationException("no unused 10.X.0.0/16 with X in 100-250 in the root namespace");
    }

    /// <summary>Ends every process in the namespace: SIGTERM, then SIGKILL after a grace period, then waits until it is empty.</summary>
    public static void KillAll(string ns, TimeSpan grace)
    {
        foreach (var pid in Pids(ns))
        {
            Posix.Signal(pid, Posix.SIGTERM);
        }
        var deadline = DateTime.UtcNow + grace;
        while (Pids(ns).Count > 0 && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(100);
        }
        deadline = DateTime.UtcNow.AddSeconds(10);
        IReadOnlyList<int> left;
        while ((left = Pids(ns)).Count > 0 && DateTime.UtcNow < deadline)
        {
            foreach (var pid in left)
            {
                Posix.Signal(pid, Posix.SIGKILL);
            }
            Thread.Sleep(100);
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var ns in new[] { NamespaceA, NamespaceB })
        {
            KillAll(ns, TimeSpan.FromSeconds(5));
        }
        // Deleting a namespace destroys the veths in it, and so their peers; what is left is removed by name.
        var failures = new List<string>();
        foreach (var args in new[]
                 {
                     new[] { "netns", "del", NamespaceA }, ["netns", "del", NamespaceB],
                     ["link", "del", $"rp{Suffix}a"], ["link", "del", $"rp{Suffix}b"], ["link", "del", Bridge],
                 })
        {
            var r = Tool.Run("ip", args);
            if (r.ExitCode != 0 && !r.Stderr.Contains("No such file", StringComparison.Ordinal)
                && !r.Stderr.Contains("Cannot find device", StringComparison.Ordinal) && !r.Stderr.Contains("does not exist", StringComparison.Ordinal))
            {
                failures.Add($"'ip {string.Join(' ', args)}': {r.Stderr.Trim()}");
            }
        }
        if (failures.Count > 0)
        {
            throw new InvalidOperationException("could not remove the test network: " + string.Join("; ", failures));
        }
    }
}

/// <summary>Signals to processes (.NET's Process.Kill is SIGKILL only).</summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal static class Posix
{
    public const int SIGINT = 2;
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;

    /// <summary>Sends <paramref name="signal"/> to <paramref name="pid"/>; false when the process is gone.</summary>
    public static bool Signal(int pid, int signal) => Kill(pid, signal) == 0;

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int sig);
}

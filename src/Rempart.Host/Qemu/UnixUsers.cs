using System.Globalization;

namespace Rempart.Host.Qemu;

/// <summary>Resolves the system user QEMU runs as (scripts/setup.sh creates <c>rempart-vm</c>).</summary>
public static class UnixUsers
{
    /// <summary>The user scripts/setup.sh creates for QEMU and swtpm.</summary>
    public const string VmUser = "rempart-vm";

    /// <summary>Looks <paramref name="name"/> up in an /etc/passwd-format file; throws when absent or root.</summary>
    public static UnixUser Lookup(string name, string passwd = "/etc/passwd")
    {
        foreach (var line in File.ReadLines(passwd))
        {
            var f = line.Split(':');
            if (f.Length >= 4 && f[0] == name
                && int.TryParse(f[2], NumberStyles.None, CultureInfo.InvariantCulture, out var uid)
                && int.TryParse(f[3], NumberStyles.None, CultureInfo.InvariantCulture, out var gid))
            {
                return uid == 0 || gid == 0
                    ? throw new QemuConfigurationException("qemu.spec.run-as-root", $"user {name} is root or in group 0")
                    : new UnixUser(name, uid, gid);
            }
        }
        throw new QemuConfigurationException("qemu.spec.run-as", $"no user {name} (scripts/setup.sh creates {VmUser})");
    }
}

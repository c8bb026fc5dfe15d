using System.Runtime.Versioning;

// The benchmark drives QEMU, swtpm and the host library, which are Linux-only.
[assembly: SupportedOSPlatform("linux")]

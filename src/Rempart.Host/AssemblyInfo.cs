using System.Runtime.Versioning;

// The host agent runs on Linux only (KVM/QEMU, swtpm, unix file modes for VM bundles).
[assembly: SupportedOSPlatform("linux")]

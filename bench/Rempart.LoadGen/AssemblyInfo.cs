using System.Runtime.Versioning;

// The benchmarks drive Linux-only parts (the host library, unix file modes).
[assembly: SupportedOSPlatform("linux")]

using System.Runtime.Versioning;

// The benchmark drives the host library, which is Linux-only.
[assembly: SupportedOSPlatform("linux")]

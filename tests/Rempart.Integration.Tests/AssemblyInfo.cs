using System.Runtime.Versioning;

// The Guardian runs on Linux only.
[assembly: SupportedOSPlatform("linux")]

using System.Runtime.Versioning;

// The host agent and its tests run on Linux only.
[assembly: SupportedOSPlatform("linux")]

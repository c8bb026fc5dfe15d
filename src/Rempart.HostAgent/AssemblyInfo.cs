using System.Runtime.Versioning;

// The host agent runs on Linux hypervisors (unix sockets and file modes).
[assembly: SupportedOSPlatform("linux")]

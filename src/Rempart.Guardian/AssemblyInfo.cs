using System.Runtime.Versioning;

// The Guardian runs on Linux (unix file modes for its key and credential files).
[assembly: SupportedOSPlatform("linux")]

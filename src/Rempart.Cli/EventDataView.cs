using System.Text;
using System.Text.Json.Nodes;
using Rempart.Attestation.EventLog;

namespace Rempart.Cli;

/// <summary>How `eventlog show` renders an event's data.</summary>
internal static class EventDataView
{
    public static JsonNode Json(UntrustedEvent e) => new JsonObject { ["kind"] = "raw", ["hex"] = Convert.ToHexStringLower(e.Data.Span) };

    public static string Text(UntrustedEvent e)
    {
        var s = e.Data.Span;
        if (s.Length is > 0 and <= 256 && !s.ContainsAnyExceptInRange((byte)0x20, (byte)0x7E))
        {
            return "\"" + Encoding.ASCII.GetString(s) + "\"";
        }
        return s.Length <= 48 ? Convert.ToHexStringLower(s) : $"{Convert.ToHexStringLower(s[..48])}… ({s.Length} bytes)";
    }
}

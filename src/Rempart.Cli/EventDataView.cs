using System.Text.Json.Nodes;
using Rempart.Attestation.Decoding;
using Rempart.Attestation.EventLog;

namespace Rempart.Cli;

/// <summary>How `eventlog show` renders an event's data: decoded (untrusted until verified), never fatal.</summary>
internal static class EventDataView
{
    public static JsonNode Json(UntrustedEvent e) => EventDataDecoder.Decode(e).ToJson();

    public static string Text(UntrustedEvent e) => EventDataDecoder.Decode(e).ToString();
}

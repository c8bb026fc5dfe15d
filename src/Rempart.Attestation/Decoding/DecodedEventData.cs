using System.Text.Json.Nodes;

namespace Rempart.Attestation.Decoding;

/// <summary>
/// The event data of one TCG event, decoded by <see cref="EventDataDecoder"/> according to its
/// (untrusted) event type. Decoding says what the bytes claim; it proves nothing: only replay
/// against a verified quote binds an event, and only for types whose digest covers the data.
/// Every subclass gives a JSON form with a "kind" field (<see cref="ToJson"/>) and a one-line
/// summary (<see cref="ToString"/>, used by <c>rempart eventlog show</c>).
/// </summary>
public abstract record DecodedEventData
{
    /// <summary>The stable name of this form in JSON ("uefi-variable", "image-load", ...).</summary>
    public abstract string Kind { get; }

    public abstract JsonObject ToJson();

    /// <summary>A one-line summary.</summary>
    public sealed override string ToString() => Summary();

    protected abstract string Summary();

    /// <summary>A JSON object that starts with this record's kind.</summary>
    protected JsonObject NewJson() => new() { ["kind"] = Kind };
}

/// <summary>
/// Data kept as bytes: an event type with no decoder here, an event type whose data is
/// vendor-defined (EV_NO_ACTION with an unknown signature, EV_EFI_SPDM_*, non-text EV_IPL), or a
/// known type whose payload this decoder does not interpret. <see cref="Note"/> says which.
/// </summary>
public sealed record RawData(ReadOnlyMemory<byte> Data, string? Note = null) : DecodedEventData
{
    public override string Kind => "raw";

    /// <summary>The data as text when it is printable ASCII (trailing NULs removed), else null.</summary>
    public string? Text => DecodingText.TryAscii(Data.Span, out var s) && s.Length > 0 ? s : null;

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["size"] = Data.Length;
        o["hex"] = Convert.ToHexStringLower(Data.Span);
        if (Text is { } t)
        {
            o["text"] = t;
        }
        if (Note is not null)
        {
            o["note"] = Note;
        }
        return o;
    }

    protected override string Summary()
    {
        var body = Text is { } t ? DecodingText.Quote(t) : DecodingText.HexPreview(Data.Span);
        return Note is null ? $"{Data.Length} bytes: {body}" : $"{Data.Length} bytes: {body} ({Note})";
    }
}

/// <summary>
/// The data of a known event type that does not have that type's layout: <see cref="Message"/>
/// names the event type, the offset within the event data and the field expected there. Decoding
/// never throws for bad data; this is what it gives instead.
/// </summary>
public sealed record DecodeError(string Message) : DecodedEventData
{
    public override string Kind => "error";

    /// <summary>Offset within the event data where decoding stopped.</summary>
    public long? DataOffset { get; init; }

    /// <summary>What was expected at <see cref="DataOffset"/>.</summary>
    public string? Expected { get; init; }

    public override JsonObject ToJson()
    {
        var o = NewJson();
        o["message"] = Message;
        if (DataOffset is { } at)
        {
            o["offset"] = at;
        }
        if (Expected is not null)
        {
            o["expected"] = Expected;
        }
        return o;
    }

    protected override string Summary() => $"malformed: {Message}";
}

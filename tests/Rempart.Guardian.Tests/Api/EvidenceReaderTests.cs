using System.IO.Pipelines;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Rempart.Guardian.Api;

namespace Rempart.Guardian.Tests.Api;

/// <summary>
/// The attestation body reader: a body cut short by cancellation is never parsed as if it were
/// whole, and evidence whose binary members are not base64 still reaches the service (as strings,
/// which it refuses as <c>evidence.format</c>) instead of being answered <c>request.invalid</c>.
/// </summary>
public sealed class EvidenceReaderTests
{
    private static readonly string Base64 = Convert.ToBase64String([1, 2, 3, 4]);

    private static JsonObject Evidence(string binary) => new()
    {
        ["hostId"] = "host-1",
        ["nonce"] = "00ff",
        ["quote"] = binary,
        ["quoteSignature"] = binary,
        ["pcrs"] = new JsonObject { ["sha256"] = new JsonObject { ["0"] = "00" } },
        ["eventLog"] = binary,
        ["bindingKeyPublic"] = binary,
        ["bindingKeyCertify"] = binary,
        ["bindingKeyCertifySignature"] = binary,
    };

    private static (HttpRequest Request, Pipe Body) Request()
    {
        var pipe = new Pipe();
        var http = new DefaultHttpContext();
        http.Features.Set<IRequestBodyPipeFeature>(new BodyFeature(pipe.Reader));
        http.Request.ContentType = "application/json";
        return (http.Request, pipe);
    }

    private static async Task<EvidenceReader.Read> ReadWholeAsync(string body)
    {
        var (request, pipe) = Request();
        await pipe.Writer.WriteAsync(Encoding.UTF8.GetBytes(body));
        await pipe.Writer.CompleteAsync();
        return await EvidenceReader.ReadAsync(request, CancellationToken.None);
    }

    [Fact]
    public async Task Base64_members_are_decoded_by_the_reader()
    {
        var read = await ReadWholeAsync(Evidence(Base64).ToJsonString());
        Assert.Null(read.Error);
        Assert.Null(read.Strings);
        Assert.Equal("host-1", read.Bytes!.HostId);
        Assert.Equal([1, 2, 3, 4], read.Bytes.EventLog);
    }

    [Theory]
    [InlineData("not base64!")]
    [InlineData("AQID*")]
    public async Task Members_that_are_not_base64_fall_back_to_strings_for_the_service_to_refuse(string binary)
    {
        var read = await ReadWholeAsync(Evidence(binary).ToJsonString());
        Assert.Null(read.Error);
        Assert.Null(read.Bytes);
        Assert.NotNull(read.Strings);
        Assert.Equal("host-1", read.Strings.HostId);
        Assert.Equal("00ff", read.Strings.Nonce);
        Assert.Equal(binary, read.Strings.EventLog);
        // What the service does with them: no decoding, hence evidence.format (audited) after the nonce is consumed.
        Assert.Null(Rempart.Guardian.Attestation.EvidenceBytes.Decode(read.Strings));
    }

    [Theory]
    [InlineData("not-json", "{\"hostId\": ")]
    [InlineData("truncated", "{\"hostId\": \"host-1\", \"quote\": \"AQ")]
    [InlineData("null", "null")]
    public async Task Unreadable_bodies_are_request_invalid(string @case, string body)
    {
        _ = @case;
        var read = await ReadWholeAsync(body);
        Assert.Null(read.Bytes);
        Assert.Null(read.Strings);
        Assert.NotNull(read.Error);
    }

    [Fact]
    public async Task A_read_cancelled_mid_body_throws_instead_of_parsing_the_part_read()
    {
        var (request, pipe) = Request();
        var whole = Encoding.UTF8.GetBytes(Evidence(Base64).ToJsonString());
        // A prefix that is valid JSON on its own would be the worst case: none is needed, any part must be refused.
        await pipe.Writer.WriteAsync(whole.AsMemory(0, whole.Length / 2));
        var reading = EvidenceReader.ReadAsync(request, CancellationToken.None);
        pipe.Reader.CancelPendingRead();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => reading);
    }

    [Fact]
    public async Task A_request_aborted_mid_body_throws_operation_cancelled()
    {
        var (request, pipe) = Request();
        var whole = Encoding.UTF8.GetBytes(Evidence(Base64).ToJsonString());
        await pipe.Writer.WriteAsync(whole.AsMemory(0, whole.Length / 2));
        using var aborted = new CancellationTokenSource();
        var reading = EvidenceReader.ReadAsync(request, aborted.Token);
        await aborted.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => reading);
    }

    [Fact]
    public async Task A_body_that_ends_after_the_request_was_aborted_is_not_parsed()
    {
        var (request, pipe) = Request();
        using var aborted = new CancellationTokenSource();
        await aborted.CancelAsync();
        await pipe.Writer.WriteAsync(Encoding.UTF8.GetBytes(Evidence(Base64).ToJsonString()));
        await pipe.Writer.CompleteAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => EvidenceReader.ReadAsync(request, aborted.Token));
    }

    private sealed class BodyFeature(PipeReader reader) : IRequestBodyPipeFeature
    {
        public PipeReader Reader { get; } = reader;
    }
}

using System.Buffers.Binary;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Sessions;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Tests.Infrastructure;
using Rempart.Tpm.Transport;

namespace Rempart.Tpm.Tests.Marshal;

/// <summary>
/// Responses recorded once from a real swtpm, then replayed cut short, with a wrong
/// responseSize, or mutated into a fresh <see cref="TpmClient"/> issuing the same command:
/// only <see cref="TpmFormatException"/> may come out of a malformed frame (Part 3, §5.1:
/// tag at 0, responseSize at 2, responseCode at 6, then handles and parameters at 10).
/// </summary>
public sealed class ResponseMutationTests(RecordedResponses recorded) : IClassFixture<RecordedResponses>
{
    public static TheoryData<string> CommandNames
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (var (name, _) in RecordedResponses.Commands)
            {
                data.Add(name);
            }
            return data;
        }
    }

    [Theory]
    [MemberData(nameof(CommandNames))]
    public void Intact_replay_succeeds_and_sends_the_recorded_commands(string command)
    {
        var exchanges = recorded.Exchanges[command];
        var bus = new RecordingTransport(new ReplayTransport(exchanges.Select(e => e.Response)));
        using (var client = new TpmClient(bus))
        {
            recorded.Issue(command, client);
        }
        Assert.Equal(exchanges.Select(e => Convert.ToHexString(e.Command)), bus.Exchanges.Select(e => Convert.ToHexString(e.Command)));
    }

    [Theory]
    [MemberData(nameof(CommandNames))]
    public void Every_truncated_response_gives_TpmFormatException(string command)
    {
        var exchanges = recorded.Exchanges[command];
        for (int k = 0; k < exchanges.Count; k++)
        {
            var full = exchanges[k].Response;
            for (int length = 0; length < full.Length; length++)
            {
                // As cut: the tag (0..1) or responseSize (2..5) is missing, or responseSize no longer matches.
                var ex = Assert.IsType<TpmFormatException>(Replay(command, k, full[..length]));
                Assert.Equal(length < 2 ? 0 : 2, ex.Offset);

                // Cut with responseSize rewritten to match, so the parameter parsers meet the shortfall.
                if (length >= 6)
                {
                    var resized = WithSize(full[..length], (uint)length);
                    var inner = Assert.IsType<TpmFormatException>(Replay(command, k, resized));
                    Assert.InRange(inner.Offset, 6, length);
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(CommandNames))]
    public void Wrong_responseSize_gives_TpmFormatException_at_offset_2(string command)
    {
        var exchanges = recorded.Exchanges[command];
        for (int k = 0; k < exchanges.Count; k++)
        {
            var full = exchanges[k].Response;
            uint n = (uint)full.Length;
            foreach (uint size in new[] { 0u, 1u, 6u, 10u, n - 1, n + 1, n + 0x10000, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu })
            {
                var ex = Assert.IsType<TpmFormatException>(Replay(command, k, WithSize(full, size)));
                Assert.Equal(2, ex.Offset);
            }
        }
    }

    /// <summary>
    /// Seeded edits of the parameter and authorisation areas with responseSize kept right:
    /// the command parses, or throws TpmFormatException, or (for a session command) a
    /// TpmSessionException for a password session answered with a nonce or HMAC.
    /// </summary>
    [Theory]
    [MemberData(nameof(CommandNames))]
    public void Seeded_body_mutations_parse_or_throw_only_typed_exceptions(string command)
    {
        var exchanges = recorded.Exchanges[command];
        var rng = new Random(0x5EED + command.Length);
        var failures = new List<string>();
        for (int k = 0; k < exchanges.Count; k++)
        {
            var full = exchanges[k].Response;
            for (int i = 0; i < 300; i++)
            {
                var m = new List<byte>(full);
                int at = 10 + rng.Next(m.Count - 10);
                switch (rng.Next(4))
                {
                    case 0:
                        m[at] ^= (byte)(1 << rng.Next(8));
                        break;
                    case 1:
                        m[at] = (byte)rng.Next(256);
                        break;
                    case 2:
                        m.Insert(at, (byte)rng.Next(256));
                        break;
                    default:
                        m.RemoveAt(at);
                        break;
                }
                var bytes = WithSize([.. m], (uint)m.Count);
                var ex = Replay(command, k, bytes);
                bool allowed = ex is null or TpmFormatException || (ex is TpmSessionException && command == "CreatePrimary");
                if (!allowed)
                {
                    failures.Add($"#{i} at {at}: {ex!.GetType().FullName}: {ex.Message} response {Convert.ToHexString(bytes)}");
                }
            }
        }
        Assert.True(failures.Count == 0, $"{failures.Count} failures:\n" + string.Join("\n", failures.Take(5)));
    }

    /// <summary>
    /// A nameAlg we cannot hash (NULL, SM3_256) leaves the returned Name unverifiable: a typed
    /// format error at the nameAlg field, not NotSupportedException from the hash. ReadPublic's
    /// response: 10 TPM2B_PUBLIC.size | 12 type | 14 nameAlg; NV_ReadPublic's: 10 size | 12 nvIndex(4) | 16 nameAlg.
    /// </summary>
    [Theory]
    [InlineData("ReadPublic", 14, (ushort)TpmAlgId.Null)]
    [InlineData("ReadPublic", 14, (ushort)TpmAlgId.Sm3_256)]
    [InlineData("NvReadPublic", 16, (ushort)TpmAlgId.Sm3_256)]
    public void Public_area_with_a_nameAlg_we_cannot_hash_gives_TpmFormatException(string command, int at, ushort nameAlg)
    {
        var response = (byte[])recorded.Exchanges[command][0].Response.Clone();
        Assert.Equal((ushort)TpmAlgId.Sha256, BinaryPrimitives.ReadUInt16BigEndian(response.AsSpan(at)));
        BinaryPrimitives.WriteUInt16BigEndian(response.AsSpan(at), nameAlg);
        var ex = Assert.IsType<TpmFormatException>(Replay(command, 0, response));
        Assert.Equal(at, ex.Offset);
    }

    /// <summary>
    /// Error responses are 10 bytes: tag 0x8001, responseSize 10, responseCode. Format-1 codes
    /// (Part 2, §6.6.3: bit 7 set) carry the error number in bits 0–5 (canonical = 0x080 | those),
    /// bit 6 set for a parameter whose number is in bits 8–11; otherwise bits 8–11 are a handle
    /// number 1–7, or with bit 11 set a session number (bits 8–10). Worked by hand:
    /// 0x18B = 0001 1000 1011: F=1, P=0, N=0001 → TPM_RC_HANDLE (0x08B), handle 1.
    /// 0x2C4 = 0010 1100 0100: F=1, P=1, N=0010 → TPM_RC_VALUE (0x084), parameter 2.
    /// 0x98E = 1001 1000 1110: F=1, P=0, N=1001 → TPM_RC_AUTH_FAIL (0x08E), session 1.
    /// 0xD9D = 1101 1001 1101: F=1, P=0, N=1101 → TPM_RC_POLICY_FAIL (0x09D), session 5.
    /// 0xFD5 = 1111 1101 0101: F=1, P=1, N=1111 → TPM_RC_SIZE (0x095), parameter 15.
    /// 0x08B: F=1, N=0 → TPM_RC_HANDLE with no position.
    /// 0x101 = VER1 + 0x001 (bit 7 clear, format 0) → TPM_RC_FAILURE; 0x902 = WARN + 0x002 → TPM_RC_OBJECT_MEMORY
    /// (not TPM_RC_RETRY, which the client sends again).
    /// </summary>
    [Theory]
    [InlineData("handle_1", 0x18Bu, 0x08Bu, "handle", 1)]
    [InlineData("parameter_2", 0x2C4u, 0x084u, "parameter", 2)]
    [InlineData("session_1", 0x98Eu, 0x08Eu, "session", 1)]
    [InlineData("session_5", 0xD9Du, 0x09Du, "session", 5)]
    [InlineData("parameter_15", 0xFD5u, 0x095u, "parameter", 15)]
    [InlineData("format1_without_position", 0x08Bu, 0x08Bu, "", 0)]
    [InlineData("format0_failure", 0x101u, 0x101u, "", 0)]
    [InlineData("warning_object_memory", 0x902u, 0x902u, "", 0)]
    public void Error_response_becomes_TpmException_naming_what_it_blames(string name, uint rc, uint canonical, string subject, int index)
    {
        _ = name;
        byte[] response = [0x80, 0x01, 0x00, 0x00, 0x00, 0x0A, (byte)(rc >> 24), (byte)(rc >> 16), (byte)(rc >> 8), (byte)rc];
        var ex = Assert.IsType<TpmException>(Replay("GetRandom", 0, response));
        Assert.Equal(TpmCc.GetRandom, ex.Command);
        Assert.Equal(rc, ex.ResponseCode);
        Assert.Equal(canonical, ex.Canonical);
        Assert.Equal(subject, ex.Subject);
        Assert.Equal(index, ex.SubjectIndex);
    }

    [Fact]
    public void Handle_error_0x18B_is_TPM_RC_HANDLE_on_handle_1()
    {
        var ex = Assert.IsType<TpmException>(Replay("GetRandom", 0, [0x80, 0x01, 0x00, 0x00, 0x00, 0x0A, 0x00, 0x00, 0x01, 0x8B]));
        Assert.Equal(TpmRc.Handle, ex.Canonical);
        Assert.True(ex.Is(TpmRc.Handle));
        Assert.Equal("handle", ex.Subject);
        Assert.Equal(1, ex.SubjectIndex);
    }

    [Fact]
    public void Error_response_with_bytes_after_the_code_is_malformed_at_offset_10()
    {
        var ex = Assert.IsType<TpmFormatException>(Replay("GetRandom", 0, [0x80, 0x01, 0x00, 0x00, 0x00, 0x0C, 0x00, 0x00, 0x01, 0x8B, 0x00, 0x00]));
        Assert.Equal(10, ex.Offset);
    }

    /// <summary>
    /// Replays <paramref name="command"/>'s recorded responses with exchange <paramref name="k"/>
    /// replaced, then the recorded ones again (a mutation may make the client ask once more).
    /// </summary>
    private Exception? Replay(string command, int k, byte[] response)
    {
        var original = recorded.Exchanges[command].Select(e => e.Response).ToList();
        var queue = original.Take(k).Append(response).Concat(original.Skip(k + 1)).Concat(original);
        using var client = new TpmClient(new ReplayTransport(queue));
        return Record.Exception(() => recorded.Issue(command, client));
    }

    private static byte[] WithSize(byte[] response, uint size)
    {
        var b = (byte[])response.Clone();
        if (b.Length >= 6)
        {
            BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(2), size);
        }
        return b;
    }
}

/// <summary>Command/response pairs recorded once per test class from a fresh swtpm (which is then stopped).</summary>
public sealed class RecordedResponses
{
    private const uint EkCertIndex = TpmConstants.NvRsaEkCert;

    /// <summary>The commands, in recording order (CreatePrimary makes the key ReadPublic reads).</summary>
    public static readonly (string Name, Action<TpmClient, uint> Issue)[] Commands =
    [
        ("GetRandom", (c, _) => c.GetRandom(16)),
        ("PcrRead", (c, _) => c.PcrRead(TpmlPcrSelection.Of(TpmAlgId.Sha256, 0, 1, 2, 3, 4, 5, 6, 7))),
        ("CreatePrimary", (c, _) => c.CreateSrk()),
        ("ReadPublic", (c, srk) => c.ReadPublic(srk)),
        ("NvReadPublic", (c, _) => c.NvReadPublic(EkCertIndex)),
        ("GetTpmProperties", (c, _) => c.GetTpmProperties()),
    ];

    public RecordedResponses()
    {
        using var tpm = new Swtpm();
        var bus = new RecordingTransport(SwtpmTransport.ConnectTcp("127.0.0.1", tpm.Port));
        using var client = new TpmClient(bus);
        foreach (var (name, issue) in Commands)
        {
            int from = bus.Exchanges.Count;
            if (name == "CreatePrimary")
            {
                SrkHandle = client.CreateSrk().Handle!.Value;
            }
            else
            {
                issue(client, SrkHandle);
            }
            Exchanges[name] = bus.Exchanges.Skip(from).ToList();
            Assert.NotEmpty(Exchanges[name]);
        }
    }

    public uint SrkHandle { get; private set; }

    public Dictionary<string, List<(byte[] Command, byte[] Response)>> Exchanges { get; } = [];

    public void Issue(string command, TpmClient client) => Commands.Single(c => c.Name == command).Issue(client, SrkHandle);
}

using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;

namespace Rempart.Cli;

/// <summary><c>rempart quote verify</c>: checks a quote with no TPM.</summary>
internal static class QuoteCommands
{
    private const string Help = """
        Usage: rempart quote verify --ak FILE --msg FILE --sig FILE --nonce HEX [--pcrs FILE] [--format text|json]

        Verifies a TPM2_Quote: the signature by the AK over the exact quote.msg bytes, the
        TPM_GENERATED magic and quote type, the nonce, and with --pcrs (a pcrs.json) the PCR digest.
          --ak    the AK public key: TPM2B_PUBLIC (tpm2-tools *.pub) or PEM SubjectPublicKeyInfo
          --msg   TPMS_ATTEST (quote.msg)       --sig  TPMT_SIGNATURE (quote.sig)
        Exit: 0 valid, 1 invalid (each failed check is printed with its identifier), 2 unusable input.

        """;

    public static int Verify(string[] argv)
    {
        var a = new Args(argv, new HashSet<string> { "help" });
        if (Program.ShowHelp(a, Help))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var akPath = a.Require("ak", "AK public key file");
        var msgPath = a.Require("msg", "quote message file");
        var sigPath = a.Require("sig", "quote signature file");
        var nonce = TpmCommands.ParseHex(a.Require("nonce", "the nonce the quote must carry"), "--nonce");
        var pcrsPath = a.Get("pcrs");
        a.EnsureAllUsed();

        var ak = ReadAk(akPath);
        var msg = Read(msgPath, "--msg");
        var sig = ReadSignature(sigPath);
        var values = pcrsPath is null ? null : ReadPcrs(pcrsPath);
        var result = AttestationVerifier.VerifyQuote(ak, msg, sig, nonce, values);
        if (format == "json")
        {
            var o = new JsonObject
            {
                ["valid"] = result.Valid,
                ["failures"] = new JsonArray(result.Failures.Select(f => (JsonNode)new JsonObject { ["id"] = f.Id, ["message"] = f.Message }).ToArray()),
            };
            if (result.Attest is { Attested: TpmsQuoteInfo q } at)
            {
                o["pcrSelection"] = q.PcrSelect.ToString();
                o["pcrDigest"] = Convert.ToHexStringLower(q.PcrDigest);
                o["clock"] = at.ClockInfo.Clock;
                o["resetCount"] = at.ClockInfo.ResetCount;
                o["restartCount"] = at.ClockInfo.RestartCount;
                o["firmwareVersion"] = $"0x{at.FirmwareVersion:x16}";
            }
            o["pcrDigestChecked"] = values is not null;
            Console.Out.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        else if (result.Valid)
        {
            var q = (TpmsQuoteInfo)result.Attest!.Attested;
            Console.Out.WriteLine($"valid: quote of {q.PcrSelect} signed by the AK, nonce matches{(values is null ? " (PCR values not checked: no --pcrs)" : ", PCR digest matches --pcrs")}");
        }
        else
        {
            Console.Out.WriteLine("invalid:");
            foreach (var f in result.Failures)
            {
                Console.Out.WriteLine($"  {f.Id}: {f.Message}");
            }
        }
        return result.Valid ? Program.Ok : Program.Invalid;
    }

    internal static TpmtSignature ReadSignature(string path)
    {
        try
        {
            return TpmtSignature.Parse(Read(path, "--sig"));
        }
        catch (TpmFormatException e)
        {
            throw new UsageException($"--sig {path}: not a TPMT_SIGNATURE: {e.Message}");
        }
    }

    internal static Func<TpmAlgId, int, byte[]?> ReadPcrs(string path)
    {
        Dictionary<TpmAlgId, Dictionary<int, byte[]>> pcrs;
        try
        {
            pcrs = PcrJson.Read(File.Exists(path) ? File.ReadAllText(path) : throw new UsageException($"--pcrs {path}: no such file"));
        }
        catch (FormatException e)
        {
            throw new UsageException($"--pcrs {path}: {e.Message}");
        }
        return (b, p) => pcrs.TryGetValue(b, out var m) && m.TryGetValue(p, out var v) ? v : null;
    }

    internal static byte[] Read(string path, string what)
    {
        if (!File.Exists(path))
        {
            throw new UsageException($"{what} {path}: no such file");
        }
        var info = new FileInfo(path);
        if (info.Length > 1 << 20)
        {
            throw new UsageException($"{what} {path}: {info.Length} bytes is too large for a TPM structure");
        }
        return File.ReadAllBytes(path);
    }

    internal static TpmtPublic ReadAk(string path)
    {
        var bytes = Read(path, "--ak");
        var text = System.Text.Encoding.ASCII.GetString(bytes);
        try
        {
            if (text.Contains("-----BEGIN", StringComparison.Ordinal))
            {
                return KeyConversion.FromPem(text);
            }
            return TpmtPublic.ParseSized(bytes);
        }
        catch (Exception e) when (e is FormatException or ArgumentException or System.Security.Cryptography.CryptographicException)
        {
            throw new UsageException($"--ak {path}: neither a TPM2B_PUBLIC nor a PEM public key: {e.Message}");
        }
    }
}

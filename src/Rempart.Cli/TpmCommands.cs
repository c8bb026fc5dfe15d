using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.Tpm;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Transport;

namespace Rempart.Cli;

/// <summary><c>rempart tpm …</c>: read a TPM's identity and PCRs, and make quotes.</summary>
internal static class TpmCommands
{
    private static readonly HashSet<string> Flags = ["help"];

    internal static TpmClient Open(Args a)
    {
        var addr = a.Get("tpm") ?? Environment.GetEnvironmentVariable("REMPART_TPM");
        if (string.IsNullOrEmpty(addr))
        {
            throw new UsageException("missing --tpm ADDR (device:/dev/tpmrm0, swtpm:tcp:HOST:PORT or swtpm:unix:PATH), or set REMPART_TPM");
        }
        TpmAddress address;
        try
        {
            address = TpmAddress.Parse(addr);
        }
        catch (FormatException e)
        {
            throw new UsageException(e.Message);
        }
        var client = new TpmClient(address.Open());
        try
        {
            SwtpmControl? ctrl = null;
            try
            {
                client.EnsureStarted();
            }
            catch (TpmException e) when (e.Is(TpmRc.Failure) && (ctrl = address.OpenControl()) is not null)
            {
                using (ctrl)
                {
                    client.EnsureStarted(ctrl);
                }
            }
            return client;
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    public static int Info(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, "Usage: rempart tpm info --tpm ADDR [--format text|json]\n\nShows the TPM's manufacturer, firmware version, spec level, algorithms, ECC curves and PCR banks.\n"))
        {
            return Program.Ok;
        }
        var format = a.Format();
        using var c = Open(a);
        a.EnsureAllUsed();
        var p = c.GetTpmProperties();
        uint Prop(TpmPt pt) => p.TryGetValue(pt, out var v) ? v : 0;
        string manufacturer = Ascii(Prop(TpmPt.Manufacturer));
        string vendor = string.Concat(new[] { TpmPt.VendorString1, TpmPt.VendorString2, TpmPt.VendorString3, TpmPt.VendorString4 }.Select(x => Ascii(Prop(x)))).Trim();
        uint fw1 = Prop(TpmPt.FirmwareVersion1), fw2 = Prop(TpmPt.FirmwareVersion2);
        string firmware = $"{fw1 >> 16}.{fw1 & 0xFFFF}.{fw2 >> 16}.{fw2 & 0xFFFF}";
        string family = Ascii(Prop(TpmPt.FamilyIndicator));
        uint revision = Prop(TpmPt.Revision);
        var banks = c.GetPcrBanks().Selections.Where(s => s.Pcrs.Count > 0).ToList();
        var algs = c.GetAlgorithms();
        var curves = c.GetEccCurves();
        var ekRsa = c.ReadEkCertificate("rsa");
        if (format == "json")
        {
            var o = new JsonObject
            {
                ["address"] = c.Address,
                ["manufacturer"] = manufacturer,
                ["manufacturerId"] = $"0x{Prop(TpmPt.Manufacturer):x8}",
                ["vendor"] = vendor,
                ["firmware"] = firmware,
                ["family"] = family,
                ["revision"] = $"{revision / 100}.{revision % 100:00}",
                ["year"] = Prop(TpmPt.Year),
                ["dayOfYear"] = Prop(TpmPt.DayOfYear),
                ["banks"] = new JsonArray(banks.Select(b => (JsonNode)new JsonObject { ["bank"] = TpmHash.ToName(b.Hash), ["pcrs"] = b.Pcrs.Count }).ToArray()),
                ["algorithms"] = new JsonArray(algs.Select(x => (JsonNode)x.ToString()).ToArray()),
                ["eccCurves"] = new JsonArray(curves.Select(x => (JsonNode)x.ToString()).ToArray()),
                ["ekCertificate"] = new JsonObject { ["rsa"] = ekRsa is not null },
            };
            Console.Out.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return Program.Ok;
        }
        Console.Out.WriteLine($"TPM:          {c.Address}");
        Console.Out.WriteLine($"Manufacturer: {manufacturer} (0x{Prop(TpmPt.Manufacturer):x8}) {vendor}");
        Console.Out.WriteLine($"Firmware:     {firmware}");
        Console.Out.WriteLine($"Spec:         TPM {family} revision {revision / 100}.{revision % 100:00} ({Prop(TpmPt.Year)}, day {Prop(TpmPt.DayOfYear)})");
        Console.Out.WriteLine($"PCR banks:    {string.Join(", ", banks.Select(b => $"{TpmHash.ToName(b.Hash)} ({b.Pcrs.Count} PCRs)"))}");
        Console.Out.WriteLine($"Algorithms:   {string.Join(", ", algs)}");
        Console.Out.WriteLine($"ECC curves:   {string.Join(", ", curves)}");
        Console.Out.WriteLine($"EK cert:      {(ekRsa is null ? "none at 0x01c00002" : $"RSA EK certificate issued by {ekRsa.Issuer}")}");
        return Program.Ok;
    }

    private static string Ascii(uint v)
    {
        var b = new[] { (byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v };
        return new string(b.Where(x => x is >= 0x20 and < 0x7F).Select(x => (char)x).ToArray());
    }

    public static int Pcrs(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, "Usage: rempart tpm pcrs --tpm ADDR [--bank sha1|sha256|sha384|sha512] [--format text|json]\n\nReads every PCR of every allocated bank (or of one bank). JSON: {\"banks\": {\"sha256\": {\"0\": \"hex\", …}}}.\n"))
        {
            return Program.Ok;
        }
        var format = a.Format();
        var bank = a.Get("bank");
        TpmAlgId? only = null;
        if (bank is not null)
        {
            only = TpmHash.TryParse(bank, out var alg) ? alg : throw new UsageException($"--bank '{bank}' is not a hash algorithm (sha1, sha256, sha384, sha512)");
        }
        using var c = Open(a);
        a.EnsureAllUsed();
        var banks = c.GetPcrBanks().Selections.Where(s => s.Pcrs.Count > 0 && (only is null || s.Hash == only)).ToList();
        if (banks.Count == 0)
        {
            throw new UsageException(only is null ? "the TPM has no allocated PCR bank" : $"the TPM has no allocated {bank} bank");
        }
        var values = c.PcrRead(new TpmlPcrSelection(banks));
        if (format == "json")
        {
            Console.Out.WriteLine(PcrJson.Write(values.Banks));
            return Program.Ok;
        }
        foreach (var (alg, pcrs) in values.Banks.OrderBy(kv => kv.Key))
        {
            Console.Out.WriteLine($"{TpmHash.ToName(alg)}:");
            foreach (var (i, v) in pcrs)
            {
                Console.Out.WriteLine($"  {i,2} : 0x{Convert.ToHexString(v)}");
            }
        }
        return Program.Ok;
    }

    public static int Ek(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, "Usage: rempart tpm ek --tpm ADDR [--type rsa|ecc] [--format text|json|pem] [--out FILE]\n\nRe-creates the endorsement key from the TCG template (L-1 rsa, L-2 ecc), shows its Name and public key, and the EK certificate from NV (0x01c00002 rsa, 0x01c0000a ecc) when the TPM has one.\n--out FILE writes the EK's TPM2B_PUBLIC (tpm2-tools format), what 'rempart host allow-ek' takes for a TPM without EK certificate.\n"))
        {
            return Program.Ok;
        }
        var format = a.Format("text", "json", "pem");
        var type = a.Get("type") ?? "rsa";
        if (type is not ("rsa" or "ecc"))
        {
            throw new UsageException($"--type must be rsa or ecc (got '{type}')");
        }
        var outFile = a.Get("out");
        using var c = Open(a);
        a.EnsureAllUsed();
        var ek = c.CreateEk(type);
        if (outFile is not null)
        {
            File.WriteAllBytes(outFile, ek.Public.ToSizedBytes());
        }
        c.FlushContext(ek.Handle!.Value);
        var cert = c.ReadEkCertificate(type);
        bool certMatches = cert is not null && CertMatches(cert, ek.Public);
        var pem = KeyConversion.ToPem(ek.Public);
        if (format == "pem")
        {
            Console.Out.Write(pem);
            return Program.Ok;
        }
        if (format == "json")
        {
            var o = new JsonObject
            {
                ["type"] = type,
                ["name"] = Convert.ToHexStringLower(ek.Name),
                ["publicKeyPem"] = pem,
                ["certificate"] = cert is null ? null : new JsonObject
                {
                    ["subject"] = cert.Subject,
                    ["issuer"] = cert.Issuer,
                    ["serial"] = cert.SerialNumber,
                    ["notBefore"] = cert.NotBefore.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture),
                    ["notAfter"] = cert.NotAfter.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture),
                    ["sha256"] = Convert.ToHexStringLower(SHA256.HashData(cert.RawData)),
                    ["matchesEk"] = certMatches,
                    ["pem"] = cert.ExportCertificatePem(),
                },
            };
            Console.Out.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return Program.Ok;
        }
        Console.Out.WriteLine($"EK ({type}):   Name {Convert.ToHexStringLower(ek.Name)}");
        Console.Out.WriteLine(pem.TrimEnd());
        if (cert is null)
        {
            Console.Out.WriteLine("Certificate: none in NV (a Guardian will need an explicit admin allow of this EK)");
        }
        else
        {
            Console.Out.WriteLine($"Certificate: issuer {cert.Issuer}");
            Console.Out.WriteLine($"             serial {cert.SerialNumber}, valid {cert.NotBefore:yyyy-MM-dd} to {cert.NotAfter:yyyy-MM-dd}");
            Console.Out.WriteLine($"             public key {(certMatches ? "matches" : "DOES NOT MATCH")} the EK");
        }
        return Program.Ok;
    }

    private static bool CertMatches(System.Security.Cryptography.X509Certificates.X509Certificate2 cert, TpmtPublic ek) =>
        cert.PublicKey.ExportSubjectPublicKeyInfo().AsSpan().SequenceEqual(KeyConversion.ToSubjectPublicKeyInfo(ek));

    public static int Quote(string[] argv)
    {
        var a = new Args(argv, Flags);
        if (Program.ShowHelp(a, """
            Usage: rempart tpm quote --tpm ADDR --nonce HEX --pcrs BANK:LIST[+BANK:LIST] --out DIR [--ak-type rsa|ecc]

            Quotes the selected PCRs with the attestation key (a restricted signing primary key in
            the endorsement hierarchy) and the nonce as qualifying data. Writes, in tpm2-tools' formats:
              DIR/ak.pub     TPM2B_PUBLIC            DIR/ak.pem    SubjectPublicKeyInfo PEM
              DIR/quote.msg  TPMS_ATTEST             DIR/quote.sig TPMT_SIGNATURE
              DIR/pcrs.json  the quoted PCR values   DIR/ak.name   the AK's Name
            Example: rempart tpm quote --tpm swtpm:tcp:127.0.0.1:2321 --nonce 0011aabb --pcrs sha256:0,1,2,7 --out q/

            """))
        {
            return Program.Ok;
        }
        var nonce = ParseHex(a.Require("nonce", "hex nonce from the verifier"), "--nonce");
        if (nonce.Length is 0 or > 64)
        {
            throw new UsageException("--nonce must be 1 to 64 bytes of hex");
        }
        var selection = ParseSelection(a.Require("pcrs", "BANK:LIST, e.g. sha256:0,1,2,7"));
        var outDir = a.Require("out", "output folder");
        var akType = a.Get("ak-type") ?? "rsa";
        if (akType is not ("rsa" or "ecc"))
        {
            throw new UsageException($"--ak-type must be rsa or ecc (got '{akType}')");
        }
        using var c = Open(a);
        a.EnsureAllUsed();
        Directory.CreateDirectory(outDir);
        var ak = c.CreateAk(akType);
        try
        {
            for (int attempt = 0; ; attempt++)
            {
                var before = c.PcrRead(selection);
                var q = c.Quote(ak.Handle!, nonce, selection);
                var after = c.PcrRead(selection);
                bool stable = before.Banks.All(kv => kv.Value.All(p => after[kv.Key, p.Key].AsSpan().SequenceEqual(p.Value)));
                if (!stable && attempt < 3)
                {
                    continue;
                }
                var check = AttestationVerifier.VerifyQuote(ak.Public, q.Message, q.Signature, nonce, (b, p) => after[b, p]);
                if (!check.Valid)
                {
                    Console.Error.WriteLine($"error: the PCRs kept changing during the quote ({check})");
                    return Program.Failure;
                }
                File.WriteAllBytes(Path.Combine(outDir, "ak.pub"), ak.Public.ToSizedBytes());
                File.WriteAllText(Path.Combine(outDir, "ak.pem"), KeyConversion.ToPem(ak.Public));
                File.WriteAllBytes(Path.Combine(outDir, "ak.name"), ak.Name);
                File.WriteAllBytes(Path.Combine(outDir, "quote.msg"), q.Message);
                File.WriteAllBytes(Path.Combine(outDir, "quote.sig"), q.Signature.ToBytes());
                File.WriteAllText(Path.Combine(outDir, "pcrs.json"), PcrJson.Write(after.Banks));
                Console.Out.WriteLine($"quoted {selection} with AK {Convert.ToHexStringLower(ak.Name)} ({akType}); wrote ak.pub ak.pem ak.name quote.msg quote.sig pcrs.json to {outDir}");
                return Program.Ok;
            }
        }
        finally
        {
            c.FlushContext(ak.Handle!.Value);
        }
    }

    internal static byte[] ParseHex(string hex, string what)
    {
        var h = hex.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? hex[2..] : hex;
        try
        {
            return Convert.FromHexString(h);
        }
        catch (FormatException)
        {
            throw new UsageException($"{what} is not hex: '{hex}'");
        }
    }

    /// <summary>Parses tpm2-tools' PCR selection syntax: <c>sha256:0,1,2+sha1:7</c> (or <c>sha256:all</c>).</summary>
    internal static TpmlPcrSelection ParseSelection(string text)
    {
        var list = new List<TpmsPcrSelection>();
        foreach (var part in text.Split('+'))
        {
            var colon = part.IndexOf(':');
            if (colon <= 0 || !TpmHash.TryParse(part[..colon], out var alg))
            {
                throw new UsageException($"PCR selection '{part}' must be BANK:LIST, e.g. sha256:0,1,7");
            }
            var spec = part[(colon + 1)..];
            var pcrs = new SortedSet<int>();
            if (spec == "all")
            {
                pcrs.UnionWith(Enumerable.Range(0, 24));
            }
            else
            {
                foreach (var item in spec.Split(','))
                {
                    if (!int.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out int p) || p > 23)
                    {
                        throw new UsageException($"PCR index '{item}' in '{part}' must be 0-23");
                    }
                    pcrs.Add(p);
                }
            }
            if (list.Any(s => s.Hash == alg))
            {
                throw new UsageException($"bank {TpmHash.ToName(alg)} selected twice");
            }
            list.Add(new TpmsPcrSelection(alg, pcrs.ToList()));
        }
        return new TpmlPcrSelection(list);
    }

}

using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Threading.Channels;
using Rempart.Host.Snapshots;
using Rempart.KeyProtection;

namespace Rempart.SnapshotBench;

/// <summary>
/// Throughput of the sealed snapshot stream (issue 7 §3): seal, verify, open and restore of the same file,
/// next to a plain copy of the same bytes and to <c>openssl speed -evp aes-256-gcm</c> on one core, all in
/// the same run, rounds interleaved (the machine is shared: compare ratios, not absolute figures).
/// </summary>
public static class Program
{
    private static readonly string[] AllOperations = ["copy", "copy-pipelined", "seal", "verify", "open", "restore"];
    private static string[] Operations = AllOperations;

    public static async Task<int> Main(string[] args)
    {
        long sizeMiB = 1024;
        int rounds = 3;
        int chunk = SnapshotHeader.DefaultChunkSize;
        int opensslSeconds = 3;
        string dir = "/dev/shm";
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--size-mib": sizeMiB = long.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--rounds": rounds = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--chunk": chunk = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--openssl-seconds": opensslSeconds = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--dir": dir = Next(); break;
                case "--ops": Operations = [.. Next().Split(',')]; break;
                default:
                    Console.Error.WriteLine("usage: rempart-snapshotbench [--size-mib 1024] [--rounds 3] [--chunk 1048576] [--openssl-seconds 3] [--dir /dev/shm] [--ops copy,copy-pipelined,seal,verify,open,restore]");
                    return 2;
            }
        }
        long size = sizeMiB << 20;
        string work = Path.Combine(dir, "rempart-snapbench-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6)));
        Directory.CreateDirectory(work, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string source = Path.Combine(work, "state.bin"), sealedPath = Path.Combine(work, "state.sealed"), output = Path.Combine(work, "out.bin");
        try
        {
            Console.WriteLine($"{size >> 20} MiB, chunk {chunk} bytes, {rounds} rounds, files in {dir}, {Environment.ProcessorCount} cores, .NET {Environment.Version}");
            WriteSource(source, size, chunk);
            using var vmk = VmMasterKey.FromBytes(RandomNumberGenerator.GetBytes(VmMasterKey.Length));
            using var key = SnapshotKey.Derive(vmk, "vm-bench", "snap-bench");

            // openssl speed divides by its CPU user time unless -elapsed is given (then by wall-clock time).
            var openssl = new List<(int Bytes, bool Elapsed, double Rate)>();
            void Speed(string when)
            {
                foreach (bool elapsed in new[] { false, true })
                {
                    foreach (int b in new[] { 16384, chunk })
                    {
                        double r = OpenSslSpeed.Aes256Gcm(b, opensslSeconds, elapsed);
                        openssl.Add((b, elapsed, r));
                        Console.WriteLine($"openssl speed{(elapsed ? " -elapsed" : "")} -evp aes-256-gcm -bytes {b} ({when}): {r / 1e6:N0} MB/s{(elapsed ? " wall-clock" : " per user-CPU second")}");
                    }
                }
            }
            Console.WriteLine($"load average: {File.ReadAllText("/proc/loadavg").Trim()}");
            Speed("before");
            var results = Operations.ToDictionary(o => o, _ => new List<Measure>());
            for (int round = 1; round <= rounds; round++)
            {
                foreach (var op in Operations)
                {
                    var m = await Time(() => Run(op, source, sealedPath, output, key, chunk));
                    results[op].Add(m);
                    Console.WriteLine($"round {round} {op,-15} {size / m.Wall / 1e6,8:N0} MB/s  CPU {m.Cpu / m.Wall:P0} of one core (user {m.User / m.Wall:P0})");
                }
                if (Operations.Contains("restore") && !FilesEqual(source, output))
                {
                    throw new InvalidOperationException("the restored bytes differ from the source");
                }
            }
            Speed("after");
            Console.WriteLine($"load average: {File.ReadAllText("/proc/loadavg").Trim()}");

            // Medians over the rounds (interleaved, so each operation saw the same mix of disturbance).
            double Median(string op, Func<Measure, double> f) => size / results[op].Select(f).Order().ElementAt(rounds / 2);
            double Wall(string op) => Median(op, m => m.Wall);
            double PerUser(string op) => Median(op, m => m.User);
            double PerCpu(string op) => Median(op, m => m.Cpu);
            double osslCpu = openssl.Where(o => !o.Elapsed).Max(o => o.Rate);
            double osslWall = openssl.Where(o => o.Elapsed).Max(o => o.Rate);
            string? copyOp = new[] { "copy", "copy-pipelined" }.Where(results.ContainsKey).OrderByDescending(Wall).FirstOrDefault();
            double copyWall = copyOp is null ? double.NaN : Wall(copyOp), copyCpu = copyOp is null ? double.NaN : PerCpu(copyOp);
            Console.WriteLine();
            Console.WriteLine($"openssl aes-256-gcm, one core, best: {osslCpu / 1e6:N0} MB/s per user-CPU second, {osslWall / 1e6:N0} MB/s wall-clock; plain copy baseline: {copyOp ?? "none"}");
            Console.WriteLine($"medians of {rounds} rounds of {size >> 20} MiB; MB = 10^6 bytes of plaintext; restore reads every record twice: authenticates it (tag only, no decryption), then decrypts and feeds it");
            Console.WriteLine("| operation | MB/s wall | ÷ openssl wall | ÷ copy wall | MB per user-CPU s | ÷ openssl (user CPU) | MB per CPU s (user+sys) | ÷ copy (CPU) |");
            Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
            foreach (var op in Operations)
            {
                // A copy spends almost no user time (its work is the kernel's): no meaningful user-CPU rate.
                bool crypto = !op.StartsWith("copy", StringComparison.Ordinal);
                string perUser = crypto ? $"{PerUser(op) / 1e6:N0}" : "—", perUserRatio = crypto ? $"{PerUser(op) / osslCpu:P0}" : "—";
                Console.WriteLine($"| {op} | {Wall(op) / 1e6:N0} | {Wall(op) / osslWall:P0} | {Wall(op) / copyWall:P0} | {perUser} | {perUserRatio} | {PerCpu(op) / 1e6:N0} | {PerCpu(op) / copyCpu:P0} |");
            }
            return 0;
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static async Task Run(string op, string source, string sealedPath, string output, SnapshotKey key, int chunk)
    {
        switch (op)
        {
            case "copy":
            {
                using var src = OpenRead(source);
                using var dst = OpenWrite(output);
                var buffer = new byte[chunk];
                int n;
                while ((n = src.Read(buffer)) > 0)
                {
                    dst.Write(buffer, 0, n);
                }
                break;
            }
            case "copy-pipelined":
                await PipelinedCopy(source, output, chunk);
                break;
            case "seal":
            {
                using var src = OpenRead(source);
                using var dst = OpenWrite(sealedPath);
                await SnapshotStream.SealAsync(src, dst, key, chunk);
                break;
            }
            case "verify":
            {
                using var src = OpenRead(sealedPath);
                await SnapshotStream.VerifyAsync(src, key);
                break;
            }
            case "open":
            {
                using var src = OpenRead(sealedPath);
                using var dst = OpenWrite(output);
                await SnapshotStream.OpenAsync(src, key, dst);
                break;
            }
            case "restore":
            {
                using var src = OpenRead(sealedPath);
                using var dst = OpenWrite(output);
                await SnapshotStream.RestoreAsync(src, key, dst);
                break;
            }
            default:
                throw new ArgumentException(op);
        }
    }

    /// <summary>A reader task and a writer task passing 4 chunk buffers: the copy with the same overlap as the sealing pipeline, minus the crypto.</summary>
    private static async Task PipelinedCopy(string source, string output, int chunk)
    {
        using var src = OpenRead(source);
        using var dst = OpenWrite(output);
        var free = Channel.CreateBounded<byte[]>(4);
        var full = Channel.CreateBounded<(byte[] Buffer, int Length)>(4);
        for (int i = 0; i < 4; i++)
        {
            free.Writer.TryWrite(new byte[chunk]);
        }
        var reader = Task.Run(async () =>
        {
            while (true)
            {
                var b = await free.Reader.ReadAsync();
                int n = await src.ReadAtLeastAsync(b, chunk, throwOnEndOfStream: false);
                if (n > 0)
                {
                    await full.Writer.WriteAsync((b, n));
                }
                if (n < chunk)
                {
                    break;
                }
            }
            full.Writer.Complete();
        });
        var writer = Task.Run(async () =>
        {
            await foreach (var (b, n) in full.Reader.ReadAllAsync())
            {
                await dst.WriteAsync(b.AsMemory(0, n));
                await free.Writer.WriteAsync(b);
            }
        });
        await Task.WhenAll(reader, writer);
    }

    private static async Task<Measure> Time(Func<Task> action)
    {
        GC.Collect();
        using var before = Process.GetCurrentProcess();
        var (cpu0, user0) = (before.TotalProcessorTime, before.UserProcessorTime);
        var sw = Stopwatch.StartNew();
        await action();
        sw.Stop();
        using var after = Process.GetCurrentProcess();
        return new Measure(sw.Elapsed.TotalSeconds, (after.TotalProcessorTime - cpu0).TotalSeconds, (after.UserProcessorTime - user0).TotalSeconds);
    }

    /// <summary>Wall-clock seconds, and the process's CPU seconds (user + system, and user only) over one operation.</summary>
    private readonly record struct Measure(double Wall, double Cpu, double User);

    private static FileStream OpenRead(string path) =>
        new(path, new FileStreamOptions { Mode = FileMode.Open, Access = FileAccess.Read, BufferSize = 0, Options = FileOptions.SequentialScan });

    private static FileStream OpenWrite(string path) =>
        new(path, new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, BufferSize = 0 });

    private static void WriteSource(string path, long size, int chunk)
    {
        // Random bytes: a real memory image is partly zero pages, but neither AES-GCM nor a copy cares.
        using var f = OpenWrite(path);
        var buffer = new byte[chunk];
        for (long done = 0; done < size; done += chunk)
        {
            RandomNumberGenerator.Fill(buffer);
            f.Write(buffer, 0, (int)Math.Min(chunk, size - done));
        }
    }

    private static bool FilesEqual(string a, string b)
    {
        using var fa = OpenRead(a);
        using var fb = OpenRead(b);
        return SHA256.HashData(fa).AsSpan().SequenceEqual(SHA256.HashData(fb));
    }
}

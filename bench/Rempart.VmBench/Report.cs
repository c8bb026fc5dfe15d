using System.Globalization;

namespace Rempart.VmBench;

/// <summary>One start: request (or launch) to the guest's <c>begin</c>, and its segments, ms.</summary>
public sealed record StartRun(double Total, IReadOnlyList<(string Segment, double Ms)> Segments);

/// <summary>The guest's disk-bench lines: bytes and seconds for the sequential write and read of /dev/vdc.</summary>
public sealed record DiskRun(long WriteBytes, double WriteSeconds, long ReadBytes, double ReadSeconds)
{
    public double WriteMiBs => WriteBytes / 1048576.0 / WriteSeconds;

    public double ReadMiBs => ReadBytes / 1048576.0 / ReadSeconds;

    public static DiskRun From(GuestConsole console)
    {
        (long, double) Line(string op)
        {
            var item = console.Items.Select(i => i.Item).FirstOrDefault(i => i.StartsWith($"disk-bench {op} ", StringComparison.Ordinal))
                ?? throw new InvalidOperationException($"the guest printed no 'disk-bench {op}' line");
            var p = item.Split(' ');
            return (long.Parse(p[2], CultureInfo.InvariantCulture), double.Parse(p[3], CultureInfo.InvariantCulture));
        }
        var (wb, ws) = Line("write");
        var (rb, rs) = Line("read");
        return new DiskRun(wb, ws, rb, rs);
    }
}

/// <summary>Collects the runs and prints the tables bench/README.md quotes.</summary>
public sealed class Report
{
    private readonly List<(string Step, List<double> Ms)> _steps = [];
    private readonly List<(string Line, double Ms)> _create = [];
    private double _createTotal;

    public List<StartRun> Shielded { get; } = [];

    public List<StartRun> Plain { get; } = [];

    public StartRun? FirstStart { get; set; }

    public List<(string Kind, DiskRun Run)> Disk { get; } = [];

    public void Step(string step, List<double> ms) => _steps.Add((step, ms));

    public void Create(long start, long end, Clock.Marks marks)
    {
        _createTotal = Clock.Ms(start, end);
        long prev = start;
        foreach (var (at, text) in marks.Lines)
        {
            _create.Add((text, Clock.Ms(prev, at)));
            prev = at;
        }
        _create.Add(("(to the end)", Clock.Ms(prev, end)));
    }

    public void Print(TextWriter w)
    {
        w.WriteLine();
        w.WriteLine($"## vm create (test guest: 64 MiB system disk, 1 MiB marker disk): {_createTotal:0} ms; time before each progress line");
        foreach (var (line, ms) in _create)
        {
            w.WriteLine($"  {ms,8:0} ms  {line}");
        }
        w.WriteLine();
        w.WriteLine("## start-path steps timed alone (median, min-max, ms)");
        foreach (var (step, ms) in _steps)
        {
            w.WriteLine(ms.Count == 0 ? $"  {"-",8}      {step}" : $"  {Median(ms),8:0.0} ({ms.Min():0.0}-{ms.Max():0.0})  {step}");
        }
        if (Shielded.Count > 0 && Plain.Count > 0)
        {
            w.WriteLine();
            w.WriteLine("## start to the guest's init (REMPART-GUEST: begin), ms");
            w.WriteLine($"  {"round",5} {"shielded",9} {"plain",9} {"ratio",6} {"extra",7}");
            var ratios = new List<double>();
            for (int i = 0; i < Math.Min(Shielded.Count, Plain.Count); i++)
            {
                ratios.Add(Shielded[i].Total / Plain[i].Total);
                w.WriteLine($"  {i + 1,5} {Shielded[i].Total,9:0} {Plain[i].Total,9:0} {ratios[^1],6:0.000} {Shielded[i].Total - Plain[i].Total,7:0}");
            }
            w.WriteLine($"  {"med",5} {Median([.. Shielded.Select(s => s.Total)]),9:0} {Median([.. Plain.Select(s => s.Total)]),9:0} {Median(ratios),6:0.000}");
            Segments(w, "shielded (encryption-supported VM, through the agent)", Shielded);
            Segments(w, "plain (QEMU + swtpm + raw disks, as scripts/boot-test-guest.sh)", Plain);
            if (FirstStart is { } f)
            {
                Segments(w, "first shielded start after the agent started (not in the medians)", [f]);
            }
        }
        if (Disk.Count > 0)
        {
            w.WriteLine();
            w.WriteLine("## guest sequential I/O on /dev/vdc (dd bs=1M, O_DIRECT), MiB/s");
            w.WriteLine($"  {"disk",-22} {"MiB",6} {"write",8} {"read",8}");
            foreach (var (kind, r) in Disk)
            {
                w.WriteLine($"  {kind,-22} {r.WriteBytes >> 20,6} {r.WriteMiBs,8:0.0} {r.ReadMiBs,8:0.0}   ({r.WriteSeconds:0.00} s / {r.ReadSeconds:0.00} s)");
            }
            foreach (var kind in Disk.Select(d => d.Kind).Distinct().Skip(1))
            {
                var enc = Disk.Where(d => d.Kind == Disk[0].Kind).Select(d => d.Run).ToList();
                var other = Disk.Where(d => d.Kind == kind).Select(d => d.Run).ToList();
                w.WriteLine($"  {Disk[0].Kind} / {kind}: write {Median([.. enc.Select(e => e.WriteMiBs)]) / Median([.. other.Select(e => e.WriteMiBs)]):0.00}, read {Median([.. enc.Select(e => e.ReadMiBs)]) / Median([.. other.Select(e => e.ReadMiBs)]):0.00}");
            }
        }
    }

    private static void Segments(TextWriter w, string title, List<StartRun> runs)
    {
        w.WriteLine();
        w.WriteLine($"### {title}: median ms per segment (min-max)");
        for (int s = 0; s < runs[0].Segments.Count; s++)
        {
            var ms = runs.Select(r => r.Segments[s].Ms).ToList();
            w.WriteLine($"  {Median(ms),8:0} ({ms.Min():0}-{ms.Max():0})  {runs[0].Segments[s].Segment}");
        }
        var totals = runs.Select(r => r.Total).ToList();
        w.WriteLine($"  {Median(totals),8:0} ({totals.Min():0}-{totals.Max():0})  total");
    }

    private static double Median(List<double> v)
    {
        if (v.Count == 0)
        {
            return double.NaN;
        }
        var s = v.Order().ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }
}

using System.Globalization;
using Rempart.Attestation.EventLog;
using Rempart.Tpm;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;

namespace Rempart.Attestation.Policy;

/// <summary>
/// Writes a <see cref="PolicyDocument"/> as YAML with YamlDotNet's emitter (which does the
/// quoting): identifiers plain, free text and digests double-quoted, integers and booleans plain.
/// </summary>
internal sealed class PolicyWriter
{
    private readonly Emitter emitter;

    private PolicyWriter(TextWriter writer) => emitter = new Emitter(writer, 2, int.MaxValue);

    public static string Write(PolicyDocument document)
    {
        using var text = new StringWriter(CultureInfo.InvariantCulture);
        var w = new PolicyWriter(text);
        w.emitter.Emit(new StreamStart());
        w.emitter.Emit(new DocumentStart());
        w.Document(document);
        w.emitter.Emit(new DocumentEnd(true));
        w.emitter.Emit(new StreamEnd());
        return text.ToString();
    }

    private void Document(PolicyDocument d) => Map(() =>
    {
        Plain("id", d.Id);
        Plain("version", Int(d.Version));
        Plain("mode", d.Mode == PolicyMode.Audit ? "audit" : "enforce");
        if (d.Description is not null)
        {
            Quoted("description", d.Description);
        }
        Key("rules");
        Seq(d.Rules, Rule);
    });

    private void Rule(PolicyRule rule) => Map(() =>
    {
        Plain("name", rule.Name);
        if (rule.Description is not null)
        {
            Quoted("description", rule.Description);
        }
        Key(rule.Kind);
        switch (rule)
        {
            case PcrRule r:
                Map(() =>
                {
                    Plain("bank", TpmHash.ToName(r.Bank));
                    Plain("index", Int(r.Index));
                    if (r.Match == PcrMatch.Equals)
                    {
                        Quoted("equals", r.Values[0]);
                    }
                    else
                    {
                        QuotedList(r.Match == PcrMatch.In ? "in" : "notIn", r.Values);
                    }
                });
                break;
            case EventsRule r:
                Map(() =>
                {
                    Key("select");
                    Selector(r.Select);
                    Key("condition");
                    Condition(r.Condition);
                });
                break;
            case DigestsRule r:
                Map(() =>
                {
                    Key("select");
                    Selector(r.Select);
                    Plain("bank", TpmHash.ToName(r.Bank));
                    QuotedList("allow", r.Allow);
                    QuotedList("deny", r.Deny);
                });
                break;
            case SecureBootRule r:
                Map(() =>
                {
                    Plain("required", r.Required ? "true" : "false");
                    foreach (var (key, variable) in SecureBootRule.DatabaseKeys)
                    {
                        if (r.Databases.TryGetValue(variable, out var c))
                        {
                            Key(key);
                            Map(() =>
                            {
                                QuotedList("mustContain", c.MustContain);
                                QuotedList("mustNotContain", c.MustNotContain);
                                QuotedList("only", c.Only);
                            });
                        }
                    }
                });
                break;
            case KernelCmdlineRule r:
                Map(() =>
                {
                    if (r.EqualTo is not null)
                    {
                        Quoted("equal", r.EqualTo);
                    }
                    if (r.Matches is not null)
                    {
                        Quoted("matches", r.Matches.Pattern);
                    }
                    QuotedList("mustContain", r.MustContain);
                    QuotedList("mustNotContain", r.MustNotContain);
                });
                break;
            case TpmRule r:
                Map(() =>
                {
                    QuotedList("manufacturers", r.Manufacturers);
                    if (r.MinFirmwareVersion is not null)
                    {
                        Quoted("minFirmwareVersion", r.MinFirmwareVersion);
                    }
                });
                break;
        }
    });

    private void Selector(EventSelector s) => Map(() =>
    {
        if (s.Pcr is { } p)
        {
            Plain("pcr", Int(p));
        }
        if (s.Type is { } t)
        {
            Plain("type", TcgEventTypeNames.Name(t));
        }
        if (s.Variable is not null)
        {
            Quoted("variable", s.Variable);
        }
        if (s.Path is not null)
        {
            Quoted("path", s.Path);
        }
        if (s.PathMatches is not null)
        {
            Quoted("pathMatches", s.PathMatches.Pattern);
        }
        if (s.Digest is not null)
        {
            Quoted("digest", s.Digest);
        }
    });

    private void Condition(EventCondition c) => Map(() =>
    {
        Plain("op", PolicyReader.Operators.First(o => o.Value == c.Operator).Key);
        if (c.Field is not null)
        {
            Plain("field", c.Field);
        }
        if (c.Value is not null)
        {
            Key("value");
            Value(c.Value);
        }
        if (c.Values is not null)
        {
            Key("values");
            Seq(c.Values, Value);
        }
    });

    private void Value(PolicyValue v) => Scalar(v.Text, v.Plain ? ScalarStyle.Plain : ScalarStyle.DoubleQuoted);

    private static string Int(int v) => v.ToString(CultureInfo.InvariantCulture);

    private void Map(Action body)
    {
        emitter.Emit(new MappingStart(AnchorName.Empty, TagName.Empty, true, MappingStyle.Block));
        body();
        emitter.Emit(new MappingEnd());
    }

    private void Seq<T>(IEnumerable<T> items, Action<T> item)
    {
        emitter.Emit(new SequenceStart(AnchorName.Empty, TagName.Empty, true, SequenceStyle.Block));
        foreach (var i in items)
        {
            item(i);
        }
        emitter.Emit(new SequenceEnd());
    }

    private void Key(string key) => Scalar(key, ScalarStyle.Plain);

    private void Plain(string key, string value)
    {
        Key(key);
        Scalar(value, ScalarStyle.Plain);
    }

    private void Quoted(string key, string value)
    {
        Key(key);
        Scalar(value, ScalarStyle.DoubleQuoted);
    }

    private void QuotedList(string key, IReadOnlyList<string>? values)
    {
        if (values is null)
        {
            return;
        }
        Key(key);
        Seq(values, v => Scalar(v, ScalarStyle.DoubleQuoted));
    }

    private void Scalar(string value, ScalarStyle style) =>
        emitter.Emit(new Scalar(AnchorName.Empty, TagName.Empty, value, style, true, true));
}

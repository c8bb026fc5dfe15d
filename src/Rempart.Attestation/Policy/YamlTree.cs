using YamlDotNet.Core;
using YamlDotNet.Core.Events;

namespace Rempart.Attestation.Policy;

/// <summary>A node of a policy document, with where it starts (1-based line and column).</summary>
internal abstract class YNode(int line, int column)
{
    public int Line { get; } = line;

    public int Column { get; } = column;

    public abstract string KindName { get; }
}

/// <summary>A scalar: its text, and whether it was written plain (unquoted: may be read as a number or a boolean).</summary>
internal sealed class YScalar(int line, int column, string value, bool plain) : YNode(line, column)
{
    public string Value { get; } = value;

    public bool Plain { get; } = plain;

    public override string KindName => "a scalar";
}

internal sealed class YSequence(int line, int column) : YNode(line, column)
{
    public List<YNode> Items { get; } = [];

    public override string KindName => "a list";
}

internal sealed class YMapping(int line, int column) : YNode(line, column)
{
    public List<(YScalar Key, YNode Value)> Entries { get; } = [];

    public HashSet<string> Keys { get; } = new(StringComparer.Ordinal);

    public override string KindName => "a mapping";

    public YNode? Get(string key) => Entries.FirstOrDefault(e => e.Key.Value == key).Value;
}

/// <summary>
/// Builds a <see cref="YNode"/> tree from YamlDotNet's event parser (YAML 1.1/1.2; JSON is its
/// flow subset), iteratively and within limits, so that no document, however nested or large,
/// can exhaust the stack or memory. Refused, as errors with their position: syntax errors, more
/// than one document, anchors and aliases (no alias expansion), explicit tags, keys that are not
/// scalars, and duplicate keys.
/// </summary>
internal static class YamlTree
{
    public const int MaxTextLength = 1 << 20;
    public const int MaxDepth = 32;
    public const int MaxNodes = 100_000;

    public static YNode? Load(string text, List<PolicyError> errors)
    {
        if (text.Length > MaxTextLength)
        {
            errors.Add(new PolicyError(1, 1, "", $"the document is {text.Length} characters long, more than the {MaxTextLength} allowed"));
            return null;
        }
        var parser = new Parser(new StringReader(text));
        var stack = new Stack<(YNode Node, YScalar? PendingKey)>();
        YNode? root = null;
        int documents = 0, nodes = 0, line = 1, column = 1;
        try
        {
            while (parser.MoveNext())
            {
                var ev = parser.Current!;
                line = (int)ev.Start.Line;
                column = (int)ev.Start.Column;
                switch (ev)
                {
                    case DocumentStart:
                        if (++documents > 1)
                        {
                            errors.Add(new PolicyError(line, column, "", "a policy is one YAML document (found a second one)"));
                            return null;
                        }
                        break;
                    case AnchorAlias:
                        errors.Add(new PolicyError(line, column, "", "aliases (*name) are not allowed in a policy"));
                        return null;
                    case NodeEvent n when !n.Anchor.IsEmpty:
                        errors.Add(new PolicyError(line, column, "", $"anchors (&{n.Anchor}) are not allowed in a policy"));
                        return null;
                    case NodeEvent n when !n.Tag.IsEmpty && !n.Tag.IsNonSpecific:
                        errors.Add(new PolicyError(line, column, "", $"explicit tags ({n.Tag}) are not allowed in a policy"));
                        return null;
                    case Scalar s:
                        if (!Add(new YScalar(line, column, s.Value, s.Style == ScalarStyle.Plain), stack, ref root, errors, ++nodes))
                        {
                            return null;
                        }
                        break;
                    case MappingStart or SequenceStart:
                        YNode container = ev is MappingStart ? new YMapping(line, column) : new YSequence(line, column);
                        if (stack.Count >= MaxDepth)
                        {
                            errors.Add(new PolicyError(line, column, "", $"the document nests deeper than {MaxDepth} levels"));
                            return null;
                        }
                        if (!Add(container, stack, ref root, errors, ++nodes))
                        {
                            return null;
                        }
                        stack.Push((container, null));
                        break;
                    case MappingEnd or SequenceEnd:
                        stack.Pop();
                        break;
                }
            }
        }
        catch (YamlException e)
        {
            // YamlDotNet's message repeats the position; keep the reason.
            string reason = e.InnerException?.Message ?? e.Message;
            int at = reason.IndexOf("): ", StringComparison.Ordinal);
            errors.Add(new PolicyError((int)e.Start.Line, (int)e.Start.Column, "", "not valid YAML: " + (at >= 0 ? reason[(at + 3)..] : reason)));
            return null;
        }
#pragma warning disable CA1031 // YamlDotNet's scanner throws other exceptions on some malformed input (found by fuzzing): still an error, never a crash.
        catch (Exception e) when (e is not OutOfMemoryException)
#pragma warning restore CA1031
        {
            errors.Add(new PolicyError(line, column, "", $"not valid YAML: the parser stopped after this point ({e.GetType().Name})"));
            return null;
        }
        if (root is null)
        {
            errors.Add(new PolicyError(1, 1, "", "the document is empty"));
        }
        return root;
    }

    private static bool Add(YNode node, Stack<(YNode Node, YScalar? PendingKey)> stack, ref YNode? root, List<PolicyError> errors, int count)
    {
        if (count > MaxNodes)
        {
            errors.Add(new PolicyError(node.Line, node.Column, "", $"the document has more than {MaxNodes} nodes"));
            return false;
        }
        if (stack.Count == 0)
        {
            root = node;
            return true;
        }
        var (parent, pendingKey) = stack.Pop();
        if (parent is YSequence seq)
        {
            seq.Items.Add(node);
            stack.Push((parent, null));
            return true;
        }
        var map = (YMapping)parent;
        if (pendingKey is null)
        {
            if (node is not YScalar key)
            {
                errors.Add(new PolicyError(node.Line, node.Column, "", $"a mapping key must be a scalar (got {node.KindName})"));
                return false;
            }
            if (!map.Keys.Add(key.Value))
            {
                errors.Add(new PolicyError(key.Line, key.Column, key.Value, $"duplicate key '{key.Value}'"));
                return false;
            }
            stack.Push((parent, key));
            return true;
        }
        map.Entries.Add((pendingKey, node));
        stack.Push((parent, null));
        return true;
    }
}

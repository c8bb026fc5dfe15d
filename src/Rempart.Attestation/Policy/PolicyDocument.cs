namespace Rempart.Attestation.Policy;

/// <summary>The result of parsing a policy: the document, or the errors (each naming its line, column and field).</summary>
public sealed record PolicyParseResult(PolicyDocument? Document, IReadOnlyList<PolicyError> Errors)
{
    public bool Success => Document is not null;
}

/// <summary>
/// A policy document (docs/policy.md): an id, a version, a mode and rules. Made by
/// <see cref="Parse"/> (YAML or JSON text) or <see cref="PolicyBaseline.Capture"/>; written back by
/// <see cref="ToYaml"/>, which <see cref="Parse"/> reads to the same document.
/// </summary>
public sealed record PolicyDocument(string Id, int Version, PolicyMode Mode, IReadOnlyList<PolicyRule> Rules, string? Description = null)
{
    /// <summary>
    /// Parses YAML (or JSON, its flow subset). Never throws for any text: a document that does not
    /// meet the schema — unknown fields or operators, missing fields, bad values, invalid regular
    /// expressions, invalid YAML — gives no document and every error found.
    /// </summary>
    public static PolicyParseResult Parse(string text)
    {
        var errors = new List<PolicyError>();
        var root = YamlTree.Load(text ?? "", errors);
        var document = root is null ? null : new PolicyReader(errors).Read(root);
        return errors.Count > 0 || document is null ? new PolicyParseResult(null, errors) : new PolicyParseResult(document, []);
    }

    /// <summary>The document as YAML, in the schema's field order.</summary>
    public string ToYaml() => PolicyWriter.Write(this);
}

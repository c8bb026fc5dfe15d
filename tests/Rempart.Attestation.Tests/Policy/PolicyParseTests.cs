using Rempart.Attestation.Policy;

namespace Rempart.Attestation.Tests.Policy;

/// <summary>Bad documents give errors naming line and field (fail closed); good ones parse from YAML and JSON alike.</summary>
public sealed class PolicyParseTests
{
    private const string Head = "id: p\nversion: 1\nrules:\n  - name: r\n";

    /// <summary>Case name → document, the field the error names, its line, a text of its message.</summary>
    public static TheoryData<string, string, string, int, string> BadDocuments() => new()
    {
        { "unknown_operator", Head + "    events:\n      select: {pcr: 7}\n      condition: {op: contains, field: type, value: x}\n",
            "rules[0].events.condition.op", 7, "unknown operator 'contains'" },
        { "bad_regex_in_condition", Head + "    events:\n      select: {pcr: 7}\n      condition:\n        op: matches\n        field: type\n        value: '[a-'\n",
            "rules[0].events.condition.value", 10, "not a valid regular expression" },
        { "bad_regex_in_kernel_cmdline", Head + "    kernelCmdline:\n      matches: '(ro'\n", "rules[0].kernelCmdline.matches", 6, "not a valid regular expression" },
        { "regex_escaping_its_anchors", Head + "    kernelCmdline:\n      matches: 'x)|(.*'\n", "rules[0].kernelCmdline.matches", 6, "not a valid regular expression" },
        { "bad_regex_in_path_selector", Head + "    events:\n      select: {pathMatches: '*.efi'}\n      condition: {op: any}\n", "rules[0].events.select.pathMatches", 6, "not a valid regular expression" },
        { "missing_id", "version: 1\nrules:\n  - name: r\n    tpm: {manufacturers: [IFX]}\n", "id", 1, "missing required field 'id'" },
        { "missing_version", "id: p\nrules:\n  - name: r\n    tpm: {manufacturers: [IFX]}\n", "version", 1, "missing required field 'version'" },
        { "missing_rules", "id: p\nversion: 1\n", "rules", 1, "missing required field 'rules'" },
        { "missing_rule_name", "id: p\nversion: 1\nrules:\n  - secureBoot: {required: true}\n", "rules[0].name", 4, "missing required field 'name'" },
        { "missing_pcr_index", Head + "    pcr: {bank: sha256, equals: " + new string('0', 64) + "}\n", "rules[0].pcr.index", 5, "missing required field 'index'" },
        { "missing_pcr_value", Head + "    pcr: {bank: sha256, index: 0}\n", "rules[0].pcr", 5, "needs one of: equals, in, notIn" },
        { "missing_condition", Head + "    events:\n      select: {pcr: 7}\n", "rules[0].events.condition", 6, "missing required field 'condition'" },
        { "missing_condition_field", Head + "    events:\n      select: {pcr: 7}\n      condition: {op: equal, value: 1}\n", "rules[0].events.condition.field", 7, "missing required field 'field'" },
        { "missing_condition_value", Head + "    events:\n      select: {pcr: 7}\n      condition: {op: equal, field: number}\n", "rules[0].events.condition.value", 7, "missing required field 'value'" },
        { "missing_condition_values", Head + "    events:\n      select: {pcr: 7}\n      condition: {op: subset, field: number}\n", "rules[0].events.condition.values", 7, "missing required field 'values'" },
        { "unknown_top_level_field", "id: p\nversion: 1\nowner: ops\nrules:\n  - name: r\n    tpm: {manufacturers: [IFX]}\n", "owner", 3, "unknown field 'owner'" },
        { "unknown_rule_field", Head + "    severity: high\n    tpm: {manufacturers: [IFX]}\n", "rules[0].severity", 5, "unknown field 'severity'" },
        { "unknown_selector_field", Head + "    events:\n      select: {pcrs: 7}\n      condition: {op: any}\n", "rules[0].events.select.pcrs", 6, "unknown field 'pcrs'" },
        { "unknown_secure_boot_field", Head + "    secureBoot: {required: true, mok: {only: []}}\n", "rules[0].secureBoot.mok", 5, "unknown field 'mok'" },
        { "two_rule_kinds", Head + "    tpm: {manufacturers: [IFX]}\n    secureBoot: {required: true}\n", "rules[0]", 4, "found secureBoot and tpm" },
        { "no_rule_kind", Head + "    description: nothing\n", "rules[0]", 4, "a rule needs one of" },
        { "unknown_mode", "id: p\nversion: 1\nmode: strict\nrules:\n  - name: r\n    tpm: {manufacturers: [IFX]}\n", "mode", 3, "unknown mode 'strict'" },
        { "version_not_an_integer", "id: p\nversion: one\nrules:\n  - name: r\n    tpm: {manufacturers: [IFX]}\n", "version", 2, "expected an unquoted integer" },
        { "version_zero", "id: p\nversion: 0\nrules:\n  - name: r\n    tpm: {manufacturers: [IFX]}\n", "version", 2, "out of range" },
        { "bad_id", "id: 'a policy'\nversion: 1\nrules:\n  - name: r\n    tpm: {manufacturers: [IFX]}\n", "id", 1, "is not an id" },
        { "pcr_value_not_hex", Head + "    pcr: {bank: sha256, index: 0, equals: xyz}\n", "rules[0].pcr.equals", 5, "expected a hex digest of 32 bytes" },
        { "pcr_value_of_another_bank", Head + "    pcr: {bank: sha1, index: 0, equals: " + new string('0', 64) + "}\n", "rules[0].pcr.equals", 5, "20 bytes" },
        { "pcr_in_list_item_bad", Head + "    pcr:\n      bank: sha1\n      index: 0\n      in:\n        - " + new string('0', 40) + "\n        - zz\n", "rules[0].pcr.in[1]", 10, "expected a hex digest" },
        { "unknown_bank", Head + "    pcr: {bank: md5, index: 0, equals: 00}\n", "rules[0].pcr.bank", 5, "unknown bank 'md5'" },
        { "pcr_index_out_of_range", Head + "    pcr: {bank: sha256, index: 24, equals: " + new string('0', 64) + "}\n", "rules[0].pcr.index", 5, "out of range (0 to 23)" },
        { "unknown_event_type", Head + "    events:\n      select: {type: EV_FOO}\n      condition: {op: any}\n", "rules[0].events.select.type", 6, "unknown event type 'EV_FOO'" },
        { "unknown_condition_field", Head + "    events:\n      select: {pcr: 7}\n      condition: {op: exists, field: digests.sha256}\n", "rules[0].events.condition.field", 7, "unknown field 'digests.sha256'" },
        { "value_given_to_any", Head + "    events:\n      select: {pcr: 7}\n      condition: {op: any, value: 1}\n", "rules[0].events.condition.value", 7, "'any' takes no value" },
        { "field_given_to_none", Head + "    events:\n      select: {pcr: 7}\n      condition: {op: none, field: type}\n", "rules[0].events.condition.field", 7, "takes no field" },
        { "values_given_to_equal", Head + "    events:\n      select: {pcr: 7}\n      condition: {op: equal, field: type, value: a, values: [a]}\n", "rules[0].events.condition.values", 7, "'equal' takes no values" },
        { "lessThan_of_text", Head + "    events:\n      select: {pcr: 7}\n      condition: {op: lessThan, field: number, value: ten}\n", "rules[0].events.condition.value", 7, "compares integers" },
        { "list_where_a_scalar_goes", Head + "    events:\n      select: {pcr: 7}\n      condition: {op: equal, field: [type], value: a}\n", "rules[0].events.condition.field", 7, "expected a string (got a list)" },
        { "duplicate_rule_names", Head + "    tpm: {manufacturers: [IFX]}\n  - name: r\n    secureBoot: {required: true}\n", "rules[1].name", 6, "used twice" },
        { "rule_name_not_lower_case", "id: p\nversion: 1\nrules:\n  - name: Secure_Boot\n    secureBoot: {required: true}\n", "rules[0].name", 4, "is not a rule name" },
        { "empty_rules", "id: p\nversion: 1\nrules: []\n", "rules", 3, "at least one rule" },
        { "secure_boot_asking_nothing", Head + "    secureBoot: {required: false}\n", "rules[0].secureBoot", 5, "needs required: true" },
        { "required_quoted", Head + "    secureBoot: {required: 'true'}\n", "rules[0].secureBoot.required", 5, "expected true or false" },
        { "database_entry_not_sha256", Head + "    secureBoot:\n      dbx: {mustContain: [" + new string('a', 40) + "]}\n", "rules[0].secureBoot.dbx.mustContain[0]", 6, "32 bytes" },
        { "digests_without_lists", Head + "    digests: {bank: sha256}\n", "rules[0].digests", 5, "needs allow, deny or both" },
        { "kernel_parameter_with_a_space", Head + "    kernelCmdline: {mustContain: ['a b']}\n", "rules[0].kernelCmdline.mustContain[0]", 5, "not one kernel parameter" },
        { "tpm_version_not_numeric", Head + "    tpm: {minFirmwareVersion: 7.x}\n", "rules[0].tpm.minFirmwareVersion", 5, "is not a version" },
        { "duplicate_key", "id: p\nid: q\nversion: 1\nrules:\n  - name: r\n    tpm: {manufacturers: [IFX]}\n", "id", 2, "duplicate key 'id'" },
        { "anchor", "id: &x p\nversion: 1\nrules:\n  - name: r\n    tpm: {manufacturers: [IFX]}\n", "", 1, "anchors" },
        { "explicit_tag", "id: !!str p\nversion: 1\nrules:\n  - name: r\n    tpm: {manufacturers: [IFX]}\n", "", 1, "explicit tags" },
        { "two_documents", "id: p\n---\nid: q\n", "", 2, "one YAML document" },
        { "yaml_syntax_error", "id: p\nversion: 1\nrules: [\n", "", 4, "not valid YAML" },
        { "json_syntax_error", "{\"id\": \"p\", \"version\": 1,, }", "", 1, "not valid YAML" },
        { "empty_text", "", "", 1, "the document is empty" },
        { "not_a_mapping", "- id: p\n", "", 1, "a policy is a mapping" },
        { "too_deep", "id: p\nversion: 1\nrules: " + new string('[', 40) + new string(']', 40) + "\n", "", 3, "deeper than 32" },
    };

    [Theory]
    [MemberData(nameof(BadDocuments))]
    public void Bad_document(string name, string text, string field, int line, string message)
    {
        var (document, errors) = PolicyDocument.Parse(text);

        Assert.Null(document);
        Assert.True(errors.Any(e => e.Field == field && e.Line == line && e.Message.Contains(message, StringComparison.Ordinal)),
            $"{name}: no error at line {line} for '{field}' saying '{message}'; got:\n{string.Join("\n", errors)}");
    }

    [Fact]
    public void Every_error_is_reported_not_only_the_first()
    {
        var (_, errors) = PolicyDocument.Parse("id: p\nversion: x\nmode: y\nrules:\n  - name: a\n    pcr: {bank: md5}\n  - name: b\n    tpm: {}\n");

        Assert.Equal(["version", "mode", "rules[0].pcr.bank", "rules[0].pcr.index", "rules[0].pcr", "rules[1].tpm"], errors.Select(e => e.Field));
        Assert.StartsWith("line 2, column 10: version: expected an unquoted integer", errors[0].ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void JSON_and_YAML_read_to_the_same_document()
    {
        const string yaml = """
            id: fleet-web
            version: 7
            mode: audit
            description: web tier
            rules:
              - name: boot-apps
                digests:
                  allow: ["0000000000000000000000000000000000000000000000000000000000000000"]
              - name: no-shell
                kernelCmdline: {mustNotContain: ["init="], matches: 'BOOT_IMAGE=\S+ .*'}
              - name: sb-var
                events:
                  select: {pcr: 7, type: EV_EFI_VARIABLE_DRIVER_CONFIG, variable: SecureBoot}
                  condition: {op: in, field: data.value.raw, values: [1, "1"]}
            """;
        const string json = """
            {"id":"fleet-web","version":7,"mode":"audit","description":"web tier","rules":[
              {"name":"boot-apps","digests":{"allow":["0000000000000000000000000000000000000000000000000000000000000000"]}},
              {"name":"no-shell","kernelCmdline":{"mustNotContain":["init="],"matches":"BOOT_IMAGE=\\S+ .*"}},
              {"name":"sb-var","events":{"select":{"pcr":7,"type":"EV_EFI_VARIABLE_DRIVER_CONFIG","variable":"SecureBoot"},
                "condition":{"op":"in","field":"data.value.raw","values":[1,"1"]}}}]}
            """;
        var fromYaml = Policies.Parse(yaml);
        var fromJson = Policies.Parse(json);

        Assert.Equal(fromYaml.ToYaml(), fromJson.ToYaml());
        Assert.Equal(PolicyMode.Audit, fromJson.Mode);
        Assert.Equal(["digests", "kernelCmdline", "events"], fromJson.Rules.Select(r => r.Kind));
        var digests = Assert.IsType<DigestsRule>(fromJson.Rules[0]);
        Assert.Equal(DigestsRule.DefaultSelect, digests.Select);
    }

    [Fact]
    public void ToYaml_round_trips_every_rule_kind()
    {
        const string yaml = """
            id: all-kinds
            version: 2
            rules:
              - name: pcr0
                description: "firmware: \"quoted\" text"
                pcr: {bank: sha1, index: 0, notIn: ["0000000000000000000000000000000000000000"]}
              - name: ev
                events:
                  select: {pcr: 1, type: EV_EFI_VARIABLE_BOOT, path: 'HD(', pathMatches: '.*\.EFI', digest: "0000000000000000000000000000000000000000"}
                  condition: {op: matches, field: data.value.description, value: 'ubuntu|fedora'}
              - name: dig
                digests: {select: {pcr: 2}, bank: sha384, deny: ["000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"]}
              - name: sb
                secureBoot:
                  required: true
                  pk: {only: ["1111111111111111111111111111111111111111111111111111111111111111"]}
                  dbx: {mustContain: ["2222222222222222222222222222222222222222222222222222222222222222"], mustNotContain: ["3333333333333333333333333333333333333333333333333333333333333333"]}
              - name: cmd
                kernelCmdline: {equal: "ro quiet", mustContain: [ro]}
              - name: tpm
                tpm: {manufacturers: [IFX, NTC], minFirmwareVersion: "7.85"}
              - name: count
                events: {select: {}, condition: {op: lessThan, field: number, value: 0x400}}
            """;
        var first = Policies.Parse(yaml);
        string written = first.ToYaml();
        var second = Policies.Parse(written);

        Assert.Equal(written, second.ToYaml());
        Assert.Equal(first.Rules.Select(r => r.Id), second.Rules.Select(r => r.Id));
        Assert.Equal("firmware: \"quoted\" text", second.Rules[0].Description);
        Assert.Equal(".*\\.EFI", ((EventsRule)second.Rules[1]).Select.PathMatches!.Pattern);
    }

    [Fact]
    public void The_errors_say_line_column_field_and_what()
    {
        var (_, errors) = PolicyDocument.Parse(Head + "    events:\n      select: {pcr: 7}\n      condition: {op: contains, field: type, value: x}\n");

        Assert.StartsWith("line 7, column 23: rules[0].events.condition.op: unknown operator 'contains' (expected one of: equal, notEqual,",
            Assert.Single(errors).ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void The_example_of_docs_policy_md_parses_and_the_COS_attestation_meets_it()
    {
        string doc = File.ReadAllText(DocsPolicyMd());
        int start = doc.IndexOf("```yaml", doc.IndexOf("## Example", StringComparison.Ordinal), StringComparison.Ordinal) + "```yaml".Length;
        string yaml = doc[start..doc.IndexOf("```", start, StringComparison.Ordinal)];

        var result = PolicyEvaluator.Evaluate(Policies.Parse(yaml), PolicyEvidence.CosClaims(new Dictionary<string, string> { ["manufacturer"] = "GOOG" }));

        Assert.True(result.Compliant, string.Join("\n", result.Failures));
    }

    private static string DocsPolicyMd([System.Runtime.CompilerServices.CallerFilePath] string source = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(source)!, "..", "..", "..", "docs", "policy.md"));

    [Fact]
    public void Random_mutations_of_a_valid_document_never_throw()
    {
        var valid = Policies.OneRule("name: r\nevents:\n  select: {pcr: 7, type: EV_EFI_VARIABLE_DRIVER_CONFIG}\n  condition: {op: in, field: data.unicodeName, values: [db, dbx]}").ToYaml();
        var random = new Random(9009);
        const string alphabet = "{}[]:,-'\"&*!|>#%@`\n \t\\0aZ";
        int parsed = 0;
        for (int i = 0; i < 2000; i++)
        {
            var chars = valid.ToCharArray();
            for (int m = random.Next(1, 4); m > 0; m--)
            {
                chars[random.Next(chars.Length)] = alphabet[random.Next(alphabet.Length)];
            }
            var (document, errors) = PolicyDocument.Parse(new string(chars));
            Assert.True(document is not null ^ errors.Count > 0);
            if (document is not null)
            {
                parsed++;
                // Whatever parsed evaluates without throwing, and writes back to itself.
                PolicyEvaluator.Evaluate(document, PolicyEvidence.CosClaims());
                Assert.Equal(document.ToYaml(), Policies.Parse(document.ToYaml()).ToYaml());
            }
        }
        Assert.InRange(parsed, 10, 1990); // some mutants still parse (34 with this seed): they are evaluated too
    }
}

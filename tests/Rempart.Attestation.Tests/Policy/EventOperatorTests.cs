using Rempart.Attestation.Policy;

namespace Rempart.Attestation.Tests.Policy;

/// <summary>
/// The <c>events</c> rule, every operator passing and failing, on the real COS attestation
/// (events as `rempart eventlog show` lists its log: #3 SecureBoot=1, #4-#7 PK, KEK, db, dbx,
/// #9-#11 BootOrder, Boot0000 "UiApp" (Fv path), Boot0001 (NVMe path), #22/#23/#40 boot
/// applications, #24/#41 shim authority events whose digest does not cover their data, #43/#44
/// the ExitBootServices actions in PCR 5). Its PCR 10 (IMA) does not replay.
/// </summary>
public sealed class EventOperatorTests
{
    private const string Sb = "{pcr: 7, type: EV_EFI_VARIABLE_DRIVER_CONFIG, variable: SecureBoot}";
    private const string Config = "{pcr: 7, type: EV_EFI_VARIABLE_DRIVER_CONFIG}";
    private const string Actions = "{pcr: 5, type: EV_EFI_ACTION}";
    private const string Apps = "{pcr: 4, type: EV_EFI_BOOT_SERVICES_APPLICATION}";
    private const string App22 = "dba8d69ffb244496ac8ab2950695d3da539d6ac5ec660fc6b4bdde245284cf23";
    private const string App23 = "f7bad83f87940312e4642530a9a6242e88529dc37a497d7d4e7c1c070566d542";
    private const string App40 = "6f6afb3caed004e727200a0c310731bd8ab4cd391b2d95cedf67d08e1e8e5e7e";

    /// <summary>Case name → selector, condition, null when it passes or (a text of the failure, the events it names).</summary>
    public static TheoryData<string, string, string, string?, int[]> Cases() => new()
    {
        { "any_passes", Config, "{op: any}", null, [] },
        { "any_fails_when_nothing_is_selected", "{pcr: 2, type: EV_EFI_BOOT_SERVICES_DRIVER}", "{op: any}", "no verified event matches", [] },
        { "any_needs_no_pcr", "{type: EV_EFI_GPT_EVENT}", "{op: any}", null, [] },
        { "none_passes", "{pcr: 2, type: EV_EFI_BOOT_SERVICES_DRIVER}", "{op: none}", null, [] },
        { "none_fails_naming_the_events", Apps, "{op: none}", "3 verified events match", [22, 23, 40] },
        { "equal_passes", Sb, "{op: equal, field: data.value.enabled, value: true}", null, [] },
        { "equal_fails", Sb, "{op: equal, field: data.value.enabled, value: false}", "#3 (EV_EFI_VARIABLE_DRIVER_CONFIG, PCR 7) data.value.enabled: is true", [3] },
        { "equal_on_a_list_fails_and_says_subset", "{pcr: 7, type: EV_EFI_VARIABLE_DRIVER_CONFIG, variable: dbx}",
            "{op: equal, field: data.value.lists.signatures.certificate.subject, value: x}", "4 values", [7] },
        { "notEqual_passes", Sb, "{op: notEqual, field: data.value.raw, value: 0}", null, [] },
        { "notEqual_fails", Sb, "{op: notEqual, field: data.value.raw, value: 1}", "is 1", [3] },
        { "lessThan_passes", Config, "{op: lessThan, field: number, value: 8}", null, [] },
        { "lessThan_fails", Config, "{op: lessThan, field: number, value: 5}", "#5", [5, 6, 7] },
        { "lessThan_with_a_hex_operand", Config, "{op: lessThan, field: data.variableDataLength, value: 0x10000}", null, [] },
        { "greaterThan_passes", Actions, "{op: greaterThan, field: number, value: 42}", null, [] },
        { "greaterThan_fails", Sb, "{op: greaterThan, field: data.variableDataLength, value: 1}", "is 1", [3] },
        { "greaterThan_on_text_fails", Actions, "{op: greaterThan, field: data.text, value: 1}", "is not an integer", [43, 44] },
        { "in_passes", Actions, "{op: in, field: data.text, values: [Exit Boot Services Invocation, Exit Boot Services Returned with Success]}", null, [] },
        { "in_fails", Actions, "{op: in, field: data.text, values: [Exit Boot Services Invocation]}", "'Exit Boot Services Returned with Success'", [44] },
        { "notIn_passes", Config, "{op: notIn, field: data.unicodeName, values: [dbt, dbr]}", null, [] },
        { "notIn_fails", Config, "{op: notIn, field: data.unicodeName, values: [dbx]}", "is 'dbx'", [7] },
        { "exists_passes", Sb, "{op: exists, field: data.value.raw}", null, [] },
        { "exists_fails", Config, "{op: exists, field: data.value.enabled}", "absent", [4, 5, 6, 7] },
        { "absent_passes", "{pcr: 4, type: EV_EFI_ACTION}", "{op: absent, field: data.devicePath}", null, [] },
        { "absent_fails", "{pcr: 1, type: EV_EFI_VARIABLE_BOOT, variable: BootOrder}", "{op: absent, field: data.value.order}", "present: 'Boot0000', 'Boot0001'", [9] },
        { "matches_passes", Actions, "{op: matches, field: data.text, value: 'Exit Boot Services .*'}", null, [] },
        { "matches_is_a_whole_match", Actions, "{op: matches, field: data.text, value: 'Exit Boot Services Invocation'}", "#44", [44] },
        // #42, GRUB's kernel_cmdline (785 characters): (.|.)* backtracks exponentially on it.
        { "matches_times_out_closed", "{pcr: 8, digest: 8c7e641ff6021d5647f8a481db136fb34fd550247305bd4777b3269b4a630564}",
            "{op: matches, field: data.text, value: '(.|.)*X'}", "timed out after 100 ms (fail closed)", [42] },
        { "subset_passes", Apps, $"{{op: subset, field: digest.sha256, values: [{App22}, {App23}, {App40}]}}", null, [] },
        { "subset_fails", Apps, $"{{op: subset, field: digest.sha256, values: [{App22}, {App23}]}}", App40, [40] },
        { "subset_over_a_flattened_list", "{pcr: 7, type: EV_EFI_VARIABLE_DRIVER_CONFIG, variable: 'EFI_IMAGE_SECURITY_DATABASE_GUID:dbx'}",
            "{op: subset, field: data.value.lists.signatures.certificate.subject, values: [x]}", "not in the list: 'CN=UEFI DB Key v1, OU=Chromium OS", [7] },
        { "type_field", "{pcr: 0}", "{op: in, field: type, values: [EV_S_CRTM_VERSION, EV_NONHOST_INFO, EV_SEPARATOR]}", null, [] },
        { "digest_selector", "{pcr: 7, digest: ccfc4bb32888a345bc8aeadaba552b627d99348c767681ab3141f5b01e40a40e}", "{op: equal, field: number, value: 3}", null, [] },
        { "variable_guid_selector", "{pcr: 7, type: EV_EFI_VARIABLE_DRIVER_CONFIG, variable: 'd719b2cb-3d3a-4596-a3bc-dad00e67656f:db'}", "{op: equal, field: number, value: 6}", null, [] },
        { "variable_other_vendor_selects_nothing", "{pcr: 7, type: EV_EFI_VARIABLE_DRIVER_CONFIG, variable: '8be4df61-93ca-11d2-aa0d-00e098032b8c:db'}", "{op: any}", "no verified event matches", [] },
        { "path_selector_on_boot_variables", "{pcr: 1, type: EV_EFI_VARIABLE_BOOT, path: 'nvme('}", "{op: equal, field: data.unicodeName, value: Boot0001}", null, [] },
        { "pathMatches_selector", "{pcr: 1, type: EV_EFI_VARIABLE_BOOT, pathMatches: 'Fv\\(.*'}", "{op: equal, field: data.value.description, value: UiApp}", null, [] },
        // Fail closed: reading data a digest does not cover, or over PCRs that did not verify.
        { "data_of_images_is_not_evidence", Apps, "{op: matches, field: data.devicePath, value: '.*BOOTX64.EFI'}", "digest covers something else", [22, 23, 40] },
        { "path_selector_on_images_is_not_evidence", "{pcr: 4, path: BOOTX64}", "{op: any}", "does not cover their data", [22, 23, 40] },
        { "variable_selector_over_uncovered_authority_events", "{pcr: 7, variable: SecureBoot}", "{op: any}", "its digest is not the hash of its data", [24, 41] },
        { "no_pcr_named_and_PCR_10_unverified", "{type: EV_EFI_BOOT_SERVICES_APPLICATION}", "{op: none}", "PCRs 10 do not replay", [] },
        { "pcr_named_that_did_not_verify", "{pcr: 10}", "{op: none}", "PCR 10 does not replay", [] },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Operator(string name, string select, string condition, string? failure, int[] events)
    {
        string rule = name.Replace('_', '-').ToLowerInvariant();
        var document = Policies.OneRule($"name: {rule}\nevents:\n  select: {select}\n  condition: {condition}");
        var result = PolicyEvaluator.Evaluate(document, PolicyEvidence.CosClaims());
        if (failure is null)
        {
            Assert.True(result.Compliant, string.Join("\n", result.Failures));
            return;
        }
        var f = Assert.Single(result.Failures);
        Assert.Equal("policy.rule." + rule, f.Id);
        Assert.Contains(failure, f.Message + " | " + f.Actual, StringComparison.Ordinal);
        Assert.Equal(events, f.EventNumbers);
        Assert.NotEmpty(f.Expected);
    }
}

using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Rempart.Attestation.Protocol;
using Rempart.Guardian.Storage;
using Rempart.Guardian.Tokens;
using Rempart.Host.Attestation;
using Rempart.Host.Guardian;
using Rempart.Host.Keys;
using Rempart.KeyProtection;
using Rempart.Tpm;
using Rempart.Tpm.Structures;

namespace Rempart.Integration.Tests;

/// <summary>
/// Key release end to end (issue 5 §3-4): a live Guardian with its file key provider, swtpm hosts
/// booted from real firmware logs, key protectors made offline from the Guardian's signed
/// metadata, and the released key recovered only in the attested host's TPM.
/// </summary>
public sealed class ReleaseFlowTests : IAsyncLifetime
{
    private GuardianFixture _g = null!;
    private GuardianClient _client = null!;
    private GuardianMetadata _metadata = null!;
    private readonly OwnerKey _owner = OwnerKey.Generate();

    public async Task InitializeAsync()
    {
        _g = await GuardianFixture.StartAsync();
        _client = new GuardianClient(_g.Url);
        await _g.CreateGroupAsync("prod");
        await _g.CreateGroupAsync("dev");
        // The tenant's view: the metadata document, verified, pinned by fingerprint.
        _metadata = GuardianMetadata.Parse(await _g.Http.GetStringAsync("v1/guardian/metadata"));
    }

    public async Task DisposeAsync()
    {
        _owner.Dispose();
        _client.Dispose();
        await _g.DisposeAsync();
    }

    private (KeyProtector Kp, byte[] Vmk) NewKp(string vmId, params string[] groups)
    {
        var (kp, vmk) = KeyProtector.Create(vmId, new ReleasePolicy(ShieldingLevel.Shielded, groups), _owner.PublicKey, [_metadata]);
        using (vmk)
        {
            return (kp, vmk.Bytes.ToArray());
        }
    }

    private Task<SwtpmHost> HostInAsync(string group, string log = AttestedHosts.DefaultLog) => AttestedHosts.ApprovedAsync(_g, _client, group, log);

    private Task<(string Token, CollectedEvidence Binding)> AttestAsync(SwtpmHost host) => AttestedHosts.AttestAsync(_client, host);

    private static string Unwrap(SwtpmHost host, CollectedEvidence binding, ReleaseResponse release) => AttestedHosts.Unwrap(host, binding, release);

    private async Task<string> RefusalAsync(ReleaseRequest request)
    {
        var e = await Assert.ThrowsAsync<GuardianException>(() => _client.ReleaseAsync(request));
        return e.Id;
    }

    [Fact]
    public async Task A_healthy_host_gets_the_key_only_its_TPM_in_the_attested_state_can_open_and_the_release_is_audited()
    {
        using var prod = await HostInAsync("prod");
        using var dev = await HostInAsync("dev");
        var (kp, vmk) = NewKp("vm-web-1", "prod");
        var (token, binding) = await AttestAsync(prod);

        var release = await _client.ReleaseAsync(new ReleaseRequest(kp.ToJson(), token));
        Assert.Equal(("vm-web-1", prod.HostId, "shielded"), (release.VmId, release.HostId, release.Shielding));
        Assert.Equal(Convert.ToHexStringLower(binding.BindingKeyPublic.Name()), release.BindingKey);
        Assert.DoesNotContain(Convert.ToHexStringLower(vmk), release.WrappedKey + Convert.ToHexStringLower(Convert.FromBase64String(release.WrappedKey)));
        Assert.Equal(Convert.ToHexStringLower(vmk), Unwrap(prod, binding, release));

        // Another TPM cannot open it; the same TPM after one more measurement cannot either.
        Assert.Equal("release.unwrap.load", Assert.Throws<ReleaseUnwrapException>(() => Unwrap(dev, binding, release)).Id);
        using (var c = prod.Tpm.Client())
        {
            c.PcrExtend(4, new TpmlDigestValues([new TpmtHa(TpmAlgId.Sha1, new byte[20]), new TpmtHa(TpmAlgId.Sha256, new byte[32])]));
        }
        Assert.Equal("release.unwrap.policy", Assert.Throws<ReleaseUnwrapException>(() => Unwrap(prod, binding, release)).Id);

        // Where and when the key went: one release, with the token and policy that allowed it.
        var list = JsonNode.Parse(await _g.Admin.GetStringAsync("v1/releases?vmId=vm-web-1"))!.AsArray();
        var entry = Assert.Single(list)!;
        Assert.Equal(("released", release.ReleaseId, prod.HostId, "prod"),
            (entry["outcome"]!.GetValue<string>(), entry["releaseId"]!.GetValue<string>(), entry["host"]!.GetValue<string>(), entry["group"]!.GetValue<string>()));
        Assert.Equal(release.AuditSeq, entry["auditSeq"]!.GetValue<long>());
        Assert.True(JsonNode.Parse(await _g.Admin.GetStringAsync("v1/audit/verify"))!["ok"]!.GetValue<bool>());
    }

    [Fact]
    public async Task Refusals_name_the_reason_group_tampered_KP_foreign_KP_and_tokens_and_each_is_audited()
    {
        using var prod = await HostInAsync("prod");
        using var dev = await HostInAsync("dev");
        var (kp, _) = NewKp("vm-db-1", "prod");
        var (prodToken, _) = await AttestAsync(prod);
        var (devToken, _) = await AttestAsync(dev);

        // A KP for group prod asked by a host of group dev.
        Assert.Equal("release.group.not-allowed", await RefusalAsync(new ReleaseRequest(kp.ToJson(), devToken)));

        // The same KP with its policy edited to allow dev: the header digest bound into the wrap says no.
        var tampered = kp.ToJson().Replace("\"hostGroups\":[\"prod\"]", "\"hostGroups\":[\"dev\",\"prod\"]", StringComparison.Ordinal);
        Assert.NotEqual(kp.ToJson(), tampered);
        Assert.Equal("release.kp.wrap.tag", await RefusalAsync(new ReleaseRequest(tampered, devToken)));
        Assert.Equal("release.kp.format", await RefusalAsync(new ReleaseRequest("{\"v\":1}", prodToken)));

        // A KP made only for another Guardian.
        using var otherKey = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        using var otherSigner = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var otherSpki = otherKey.ExportSubjectPublicKeyInfo();
        var other = GuardianMetadata.Create("g-other", "other", null,
            [new GuardianKeyInfo(KeyIds.Of(otherSpki), otherSpki, GuardianKeyStatus.Active, DateTimeOffset.UtcNow)],
            otherSigner.ExportSubjectPublicKeyInfo(), DateTimeOffset.UtcNow, d => otherSigner.SignData(d, HashAlgorithmName.SHA256));
        var (foreignKp, foreignVmk) = KeyProtector.Create("vm-x", new ReleasePolicy(ShieldingLevel.Shielded, ["prod"]), _owner.PublicKey, [other]);
        foreignVmk.Dispose();
        Assert.Equal("release.kp.no-guardian-key", await RefusalAsync(new ReleaseRequest(foreignKp.ToJson(), prodToken)));

        // A token another Guardian issued (a real one: same host, second Guardian).
        await using (var g2 = await GuardianFixture.StartAsync())
        {
            using var c2 = new GuardianClient(g2.Url);
            await g2.CreateGroupAsync("prod");
            var h2 = new SwtpmHost();
            using (h2)
            {
                await g2.ApproveAsync((await h2.EnrolAsync(c2)).HostId, "prod");
                var foreign = await h2.AttestAsync(c2);
                Assert.Equal("release.token.foreign", await RefusalAsync(new ReleaseRequest(kp.ToJson(), foreign.Token!)));
            }
        }
        Assert.Equal("release.token.format", await RefusalAsync(new ReleaseRequest(kp.ToJson(), "not.a.token")));

        var refusals = JsonNode.Parse(await _g.Admin.GetStringAsync("v1/releases?vmId=vm-db-1"))!.AsArray();
        Assert.Equal(["release.group.not-allowed", "release.kp.wrap.tag"],
            refusals.Take(2).Select(r => r!["reason"]!.GetValue<string>()));
        Assert.All(refusals, r => Assert.Equal("refused", r!["outcome"]!.GetValue<string>()));
    }

    [Fact]
    public async Task Stale_failed_removed_pending_unknown_hosts_and_expired_or_revoked_tokens_get_nothing()
    {
        using var prod = await HostInAsync("prod");
        var (kp, _) = NewKp("vm-api-1", "prod");
        var tokens = _g.App.Services.GetRequiredService<HealthTokens>();
        var store = _g.App.Services.GetRequiredService<IGuardianStore>();

        // Failed: one more measurement, the next attestation fails and revokes the host's tokens.
        var (token, _) = await AttestAsync(prod);
        using (var c = prod.Tpm.Client())
        {
            c.PcrExtend(4, new TpmlDigestValues([new TpmtHa(TpmAlgId.Sha1, new byte[20]), new TpmtHa(TpmAlgId.Sha256, new byte[32])]));
        }
        Assert.Equal("contraindicated", (await prod.AttestAsync(_client)).Status);
        Assert.Equal("release.token.revoked", await RefusalAsync(new ReleaseRequest(kp.ToJson(), token)));

        // Not healthy now although the token was not revoked (e.g. a replica that has not revoked yet): refused on the host's state.
        var host = (await store.GetHostAsync(prod.HostId!))!;
        var jti = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        var now = _g.Clock.GetUtcNow();
        await store.InsertTokenAsync(new IssuedTokenRecord(jti, host.Id, now, now.AddMinutes(5), null));
        var forged = tokens.Issue(new HealthClaims(jti, host.Id, "prod", "affirming", "none", 0, "000b", "00", 0), now, now.AddMinutes(5));
        Assert.Equal("release.host.not-healthy", await RefusalAsync(new ReleaseRequest(kp.ToJson(), forged)));
        await store.UpdateHostAsync(host with { State = HostStates.Pending });
        Assert.Equal("release.host.not-healthy", await RefusalAsync(new ReleaseRequest(kp.ToJson(), forged)));

        // Unknown host: a token this Guardian never recorded.
        var unknown = tokens.Issue(new HealthClaims("ffff", "host-nope", "prod", "affirming", "none", 0, "000b", "00", 0), now, now.AddMinutes(5));
        Assert.Equal("release.token.unknown", await RefusalAsync(new ReleaseRequest(kp.ToJson(), unknown)));

        // Stale: a fresh healthy host misses its period; its tokens are revoked with the state change.
        using var second = await HostInAsync("prod");
        var (fresh, _) = await AttestAsync(second);
        _g.Clock.Advance(TimeSpan.FromSeconds(121));
        (await _g.Admin.PostAsync("v1/ops/sweep", null)).EnsureSuccessStatusCode();
        Assert.Equal("stale", (await store.GetHostAsync(second.HostId!))!.State);
        Assert.Equal("release.token.revoked", await RefusalAsync(new ReleaseRequest(kp.ToJson(), fresh)));

        // Expired: past its lifetime a token is refused before anything else is looked at.
        var (later, _) = await AttestAsync(second);
        _g.Clock.Advance(TimeSpan.FromMinutes(6));
        Assert.Equal("release.token.expired", await RefusalAsync(new ReleaseRequest(kp.ToJson(), later)));

        // Removed: tokens revoked at once.
        var (again, _) = await AttestAsync(second);
        (await _g.Admin.DeleteAsync($"v1/hosts/{second.HostId}")).EnsureSuccessStatusCode();
        Assert.Equal("release.token.revoked", await RefusalAsync(new ReleaseRequest(kp.ToJson(), again)));
    }

    [Fact]
    public async Task Key_rotation_keeps_old_KPs_working_until_they_are_rewrapped_and_the_old_key_retired()
    {
        using var prod = await HostInAsync("prod");
        var (oldKp, vmk) = NewKp("vm-rot-1", "prod");
        var oldKid = _metadata.ActiveKey.Kid;
        var rotated = JsonNode.Parse(await (await _g.Admin.PostAsync("v1/keys/rotate", null)).Content.ReadAsStringAsync())!;
        var newKid = rotated["kid"]!.GetValue<string>();
        Assert.NotEqual(oldKid, newKid);

        // Retiring, not retired: the old KP still opens.
        var (token, binding) = await AttestAsync(prod);
        Assert.Equal(Convert.ToHexStringLower(vmk), Unwrap(prod, binding, await _client.ReleaseAsync(new ReleaseRequest(oldKp.ToJson(), token))));

        // The tenant re-wraps through the CLI (tenant token); the new KP has this Guardian's new key only.
        var dir = Directory.CreateTempSubdirectory("rempart-rewrap-").FullName;
        try
        {
            string[] admin = ["--guardian", _g.Url.ToString(), "--token-file", Path.Combine(_g.DataDir, "admin-token")];
            Ops.OpsSupport.Cli(["token", "create", "t", "--role", "tenant", "--out", Path.Combine(dir, "tenant"), .. admin]).Ok();
            File.WriteAllText(Path.Combine(dir, "old.kp"), oldKp.ToJson());
            var rewrap = Ops.OpsSupport.Cli(["kp", "rewrap", Path.Combine(dir, "old.kp"), "--out", Path.Combine(dir, "new.kp"),
                "--guardian", _g.Url.ToString(), "--token-file", Path.Combine(dir, "tenant"), "--format", "json"]).Ok();
            Assert.True(JsonNode.Parse(rewrap.Stdout)!["changed"]!.GetValue<bool>());
            var newKp = KeyProtector.Parse(File.ReadAllBytes(Path.Combine(dir, "new.kp")));
            Assert.Equal([newKid], newKp.Guardians.Select(w => w.Kid));
            Assert.Equal((oldKp.KpId, oldKp.VmId), (newKp.KpId, newKp.VmId));
            using (var recovered = newKp.RecoverWithOwner(_owner))
            {
                Assert.Equal(vmk, recovered.Bytes.ToArray());
            }

            (await _g.Admin.PostAsync($"v1/keys/{oldKid}/retire", null)).EnsureSuccessStatusCode();
            Assert.Equal("release.kp.guardian-key.retired", await RefusalAsync(new ReleaseRequest(oldKp.ToJson(), token)));
            Assert.Equal(Convert.ToHexStringLower(vmk), Unwrap(prod, binding, await _client.ReleaseAsync(new ReleaseRequest(newKp.ToJson(), token))));
            var again = Ops.OpsSupport.Cli(["kp", "rewrap", Path.Combine(dir, "new.kp"), "--out", Path.Combine(dir, "same.kp"),
                "--guardian", _g.Url.ToString(), "--token-file", Path.Combine(dir, "tenant"), "--format", "json"]).Ok();
            Assert.False(JsonNode.Parse(again.Stdout)!["changed"]!.GetValue<bool>());
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public async Task Parallel_releases_for_many_VMs_and_two_hosts_are_each_right_audited_and_leave_no_key_on_disk()
    {
        using var a = await HostInAsync("prod");
        using var b = await HostInAsync("prod", "go-tpm-tools__cos-85-amd-sev.bin");
        var (ta, ba) = await AttestAsync(a);
        var (tb, bb) = await AttestAsync(b);
        var vms = Enumerable.Range(0, 12).Select(i => NewKp($"vm-{i}", "prod")).ToList();
        var jobs = vms.Select((vm, i) => (vm, host: i % 2 == 0 ? (a, ta, ba) : (b, tb, bb))).ToList();
        var releases = await Task.WhenAll(jobs.Select(j => _client.ReleaseAsync(new ReleaseRequest(j.vm.Kp.ToJson(), j.host.Item2))));

        Assert.Equal(12, releases.Select(r => r.ReleaseId).Distinct().Count());
        for (int i = 0; i < jobs.Count; i++)
        {
            var (vm, (h, _, binding)) = jobs[i];
            Assert.Equal((vm.Kp.VmId, h.HostId), (releases[i].VmId, releases[i].HostId));
            Assert.Equal(Convert.ToHexStringLower(vm.Vmk), Unwrap(h, binding, releases[i]));
        }
        var audit = JsonNode.Parse(await _g.Admin.GetStringAsync("v1/audit?max=1000"))!["records"]!.AsArray();
        var released = audit.Where(r => r!["kind"]!.GetValue<string>() == "key.released").ToList();
        Assert.Equal(12, released.Count);
        Assert.True(JsonNode.Parse(await _g.Admin.GetStringAsync("v1/audit/verify"))!["ok"]!.GetValue<bool>());

        // Nothing the Guardian keeps holds a VM key: scan every file of its data folder (database included).
        var haystack = Directory.GetFiles(_g.DataDir, "*", SearchOption.AllDirectories).Select(File.ReadAllBytes).ToList();
        foreach (var (_, vmk) in vms)
        {
            Assert.DoesNotContain(haystack, bytes => bytes.AsSpan().IndexOf(vmk) >= 0);
            Assert.DoesNotContain(haystack, bytes => bytes.AsSpan().IndexOf(Encoding.ASCII.GetBytes(Convert.ToHexStringLower(vmk))) >= 0);
        }
    }
}

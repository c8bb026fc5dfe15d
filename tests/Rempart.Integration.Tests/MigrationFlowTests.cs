using System.Net;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Rempart.Attestation.Protocol;
using Rempart.Guardian.Storage;
using Rempart.Host.Attestation;
using Rempart.Host.Guardian;
using Rempart.Host.Keys;
using Rempart.KeyProtection;

namespace Rempart.Integration.Tests;

/// <summary>
/// The Guardian side of live migration (docs/migration.md): a live Guardian, swtpm hosts booted
/// from real firmware logs, key protectors made offline from its metadata. Authorise (source),
/// accept (destination), complete (source); each release opens only in its own host's TPM, and
/// every refusal is named and audited.
/// </summary>
public sealed class MigrationFlowTests : IAsyncLifetime
{
    private const string VmId = "vm-move-1";

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
        _metadata = GuardianMetadata.Parse(await _g.Http.GetStringAsync("v1/guardian/metadata"));
    }

    public async Task DisposeAsync()
    {
        _owner.Dispose();
        _client.Dispose();
        await _g.DisposeAsync();
    }

    private IGuardianStore Store => _g.App.Services.GetRequiredService<IGuardianStore>();

    private (string Kp, byte[] Vmk) NewKp(params string[] groups)
    {
        var (kp, vmk) = KeyProtector.Create(VmId, new ReleasePolicy(ShieldingLevel.Shielded, groups), _owner.PublicKey, [_metadata]);
        using (vmk)
        {
            return (kp.ToJson(), vmk.Bytes.ToArray());
        }
    }

    private Task<SwtpmHost> HostInAsync(string group, string log = AttestedHosts.DefaultLog) => AttestedHosts.ApprovedAsync(_g, _client, group, log);

    private Task<(string Token, CollectedEvidence Binding)> AttestAsync(SwtpmHost host) => AttestedHosts.AttestAsync(_client, host);

    private static string Unwrap(SwtpmHost host, CollectedEvidence binding, ReleaseResponse release) => AttestedHosts.Unwrap(host, binding, release);

    private async Task<List<(long Seq, string Kind, string Subject, JsonObject Data)>> AuditAsync() =>
        (await Store.ReadAuditAsync(1, 1000)).Select(r => (r.Seq, r.Kind, r.Subject, JsonNode.Parse(r.DataJson)!.AsObject())).ToList();

    private static async Task<(string Id, int Status)> RefusalAsync(Func<Task> call)
    {
        var e = await Assert.ThrowsAsync<GuardianException>(call);
        return (e.Id, e.Status);
    }

    private static Task<JsonNode> CompleteAsync(GuardianClient client, string id, string token, string outcome = "completed", string? reason = "switched over") =>
        client.PostJsonAsync($"v1/migrations/{id}/complete", new MigrationCompleteRequest(token, outcome, reason));

    /// <summary>Two healthy prod hosts and an authorised migration of a prod VM from the first to the second.</summary>
    private sealed record Authorised(SwtpmHost Source, string SourceToken, CollectedEvidence SourceBinding,
        SwtpmHost Destination, string DestinationToken, CollectedEvidence DestinationBinding, string Kp, byte[] Vmk, MigrationAuthorisation Answer) : IDisposable
    {
        public void Dispose()
        {
            Source.Dispose();
            Destination.Dispose();
        }
    }

    private async Task<Authorised> AuthorisedAsync()
    {
        var source = await HostInAsync("prod");
        var destination = await HostInAsync("prod", "go-tpm-tools__cos-85-amd-sev.bin");
        var (sourceToken, sourceBinding) = await AttestAsync(source);
        var (destinationToken, destinationBinding) = await AttestAsync(destination);
        var (kp, vmk) = NewKp("prod");
        var answer = await _client.AuthoriseMigrationAsync(new MigrationAuthoriseRequest(kp, sourceToken, destinationToken));
        return new Authorised(source, sourceToken, sourceBinding, destination, destinationToken, destinationBinding, kp, vmk, answer);
    }

    [Fact]
    public async Task Authorise_accept_complete_gives_each_TPM_its_own_release_and_every_step_is_audited()
    {
        using var m = await AuthorisedAsync();
        var a = m.Answer;
        Assert.Matches("^[0-9a-f]{32}$", a.MigrationId);
        Assert.Equal((VmId, _g.Clock.GetUtcNow().AddMinutes(2).ToUnixTimeSeconds()), (a.VmId, a.ExpiresAt.ToUnixTimeSeconds()));
        Assert.Equal((m.Source.HostId, "prod", Convert.ToHexStringLower(m.SourceBinding.BindingKeyPublic.Name())),
            (a.Source.HostId, a.Source.Group, a.Source.BindingKey));
        Assert.Equal((m.Destination.HostId, "prod", Convert.ToHexStringLower(m.DestinationBinding.BindingKeyPublic.Name())),
            (a.Destination.HostId, a.Destination.Group, a.Destination.BindingKey));
        Assert.Equal(m.Source.HostId, a.SourceRelease.HostId);
        Assert.Equal(Convert.ToHexStringLower(m.Vmk), Unwrap(m.Source, m.SourceBinding, a.SourceRelease));
        // The source's release is for the source's TPM only.
        Assert.Equal("release.unwrap.load", Assert.Throws<ReleaseUnwrapException>(() => Unwrap(m.Destination, m.SourceBinding, a.SourceRelease)).Id);

        // The destination's check (before it opens a peer's share): what the Guardian recorded, no release, no audit record.
        var auditBefore = (await AuditAsync()).Count;
        var check = await _client.CheckMigrationAsync(a.MigrationId, new MigrationCheckRequest(m.DestinationToken));
        Assert.Equal((a.MigrationId, VmId, a.ExpiresAt, a.Source, a.Destination), (check.MigrationId, check.VmId, check.ExpiresAt, check.Source, check.Destination));
        Assert.Equal(auditBefore, (await AuditAsync()).Count);

        var accepted = await _client.AcceptMigrationAsync(a.MigrationId, new MigrationAcceptRequest(m.Kp, m.DestinationToken));
        Assert.Equal((a.MigrationId, a.Source, a.Destination), (accepted.MigrationId, accepted.Source, accepted.Destination));
        Assert.Equal(m.Destination.HostId, accepted.Release.HostId);
        Assert.NotEqual(a.SourceRelease.ReleaseId, accepted.Release.ReleaseId);
        Assert.Equal(Convert.ToHexStringLower(m.Vmk), Unwrap(m.Destination, m.DestinationBinding, accepted.Release));
        Assert.Equal("release.unwrap.load", Assert.Throws<ReleaseUnwrapException>(() => Unwrap(m.Source, m.DestinationBinding, accepted.Release)).Id);
        // What the destination wraps its channel share to: the source's attested binding key.
        Assert.Equal(m.SourceBinding.BindingKeyPublic.Name(),
            Rempart.Tpm.Structures.TpmtPublic.ParseSized(System.Buffers.Text.Base64Url.DecodeFromChars(accepted.Source.BindingPublic)).Name());

        // The source reports after its token and the migration expired (kept for the report): accepted.
        _g.Clock.Advance(TimeSpan.FromMinutes(6));
        var completed = await CompleteAsync(_client, a.MigrationId, m.SourceToken);
        Assert.Equal((a.MigrationId, "completed"), (completed["migrationId"]!.GetValue<string>(), completed["outcome"]!.GetValue<string>()));

        var audit = await AuditAsync();
        var authorised = Assert.Single(audit, r => r.Kind == "vm.migration-authorised");
        Assert.Equal("vm:" + VmId, authorised.Subject);
        Assert.Equal((a.MigrationId, VmId, a.KpId, m.Source.HostId, m.Destination.HostId, "prod"),
            (authorised.Data["migrationId"]!.GetValue<string>(), authorised.Data["vmId"]!.GetValue<string>(), authorised.Data["kpId"]!.GetValue<string>(),
                authorised.Data["source"]!["host"]!.GetValue<string>(), authorised.Data["destination"]!["host"]!.GetValue<string>(),
                authorised.Data["destination"]!["group"]!.GetValue<string>()));
        Assert.False(string.IsNullOrEmpty(authorised.Data["source"]!["jti"]!.GetValue<string>()));
        var released = audit.Where(r => r.Kind == "key.released").ToList();
        Assert.Equal([(a.SourceRelease.ReleaseId, m.Source.HostId!, a.MigrationId), (accepted.Release.ReleaseId, m.Destination.HostId!, a.MigrationId)],
            released.Select(r => (r.Data["releaseId"]!.GetValue<string>(), r.Data["host"]!.GetValue<string>(), r.Data["migrationId"]!.GetValue<string>())));
        Assert.Equal(a.MigrationId, Assert.Single(audit, r => r.Kind == "vm.migration-accepted").Data["migrationId"]!.GetValue<string>());
        var done = Assert.Single(audit, r => r.Kind == "vm.migration-completed");
        Assert.Equal((completed["auditSeq"]!.GetValue<long>(), "switched over", m.Source.HostId, m.Destination.HostId),
            (done.Seq, done.Data["reason"]!.GetValue<string>(), done.Data["source"]!.GetValue<string>(), done.Data["destination"]!.GetValue<string>()));
        Assert.DoesNotContain(audit, r => r.Kind == "vm.migration-refused");
        Assert.True(JsonNode.Parse(await _g.Admin.GetStringAsync("v1/audit/verify"))!["ok"]!.GetValue<bool>());

        // The VM's release history shows both ends.
        var list = JsonNode.Parse(await _g.Admin.GetStringAsync($"v1/releases?vmId={VmId}"))!.AsArray();
        Assert.Equal([m.Source.HostId!, m.Destination.HostId!], list.Select(r => r!["host"]!.GetValue<string>()));
    }

    [Theory]
    [InlineData("destination-stale", "migration.destination.host.not-healthy", 403)]
    [InlineData("destination-failed", "migration.destination.host.not-healthy", 403)]
    [InlineData("destination-swept-stale", "migration.destination.token.revoked", 401)]
    [InlineData("destination-group", "migration.destination.group.not-allowed", 403)]
    [InlineData("source-group", "migration.source.group.not-allowed", 403)]
    [InlineData("same-host", "migration.same-host", 400)]
    [InlineData("source-token-expired", "migration.source.token.expired", 401)]
    [InlineData("destination-token-foreign", "migration.destination.token.foreign", 401)]
    [InlineData("kp-tampered", "migration.kp.wrap.tag", 400)]
    public async Task Authorise_refuses_and_audits(string @case, string id, int status)
    {
        using var source = await HostInAsync(@case == "source-group" ? "dev" : "prod");
        using var destination = await HostInAsync(@case is "destination-group" or "kp-tampered" ? "dev" : "prod", "go-tpm-tools__cos-85-amd-sev.bin");
        var (sourceToken, _) = await AttestAsync(source);
        var (destinationToken, _) = await AttestAsync(destination);
        var (kp, _) = NewKp("prod");
        switch (@case)
        {
            case "destination-stale" or "destination-failed":
                // Not healthy now although its token was not revoked (a replica that has not caught up): refused on the host's state.
                var host = (await Store.GetHostAsync(destination.HostId!))!;
                await Store.UpdateHostAsync(host with { State = @case == "destination-stale" ? HostStates.Stale : HostStates.Failed });
                break;
            case "destination-swept-stale":
                _g.Clock.Advance(TimeSpan.FromSeconds(121));
                (sourceToken, _) = await AttestAsync(source);
                (await _g.Admin.PostAsync("v1/ops/sweep", null)).EnsureSuccessStatusCode();
                Assert.Equal(HostStates.Stale, (await Store.GetHostAsync(destination.HostId!))!.State);
                break;
            case "same-host":
                destinationToken = sourceToken;
                break;
            case "source-token-expired":
                _g.Clock.Advance(TimeSpan.FromMinutes(6));
                (destinationToken, _) = await AttestAsync(destination);
                break;
            case "destination-token-foreign":
                await using (var g2 = await GuardianFixture.StartAsync())
                {
                    using var c2 = new GuardianClient(g2.Url);
                    await g2.CreateGroupAsync("prod");
                    await g2.ApproveAsync((await destination.EnrolAsync(c2)).HostId, "prod");
                    destinationToken = (await destination.AttestAsync(c2)).Token!;
                }
                break;
            case "kp-tampered":
                // The policy edited to allow dev: the header digest bound into the wrap says no.
                var tampered = kp.Replace("\"hostGroups\":[\"prod\"]", "\"hostGroups\":[\"dev\",\"prod\"]", StringComparison.Ordinal);
                Assert.NotEqual(kp, tampered);
                kp = tampered;
                break;
        }

        Assert.Equal((id, status), await RefusalAsync(() => _client.AuthoriseMigrationAsync(new MigrationAuthoriseRequest(kp, sourceToken, destinationToken))));
        var audit = await AuditAsync();
        var refused = Assert.Single(audit, r => r.Kind == "vm.migration-refused");
        Assert.Equal((id, "authorise"), (refused.Data["reason"]!.GetValue<string>(), refused.Data["step"]!.GetValue<string>()));
        Assert.DoesNotContain(audit, r => r.Kind is "key.released" or "vm.migration-authorised");
    }

    /// <summary>What the destination sends to check or accept in each refusal case of those theories (the migration authorised, its token, the key protector), the case's change made.</summary>
    private async Task<(string MigrationId, string Token, string Kp)> DestinationCaseAsync(Authorised m, string @case, SwtpmHost? third)
    {
        var (migrationId, token, kp) = (m.Answer.MigrationId, m.DestinationToken, m.Kp);
        switch (@case)
        {
            case "wrong-host":
                (token, _) = await AttestAsync(third!);
                break;
            case "the-source":
                token = m.SourceToken;
                break;
            case "checked-already":
                await _client.CheckMigrationAsync(migrationId, new MigrationCheckRequest(token));
                break;
            case "twice":
            case "accepted-already":
                await _client.AcceptMigrationAsync(migrationId, new MigrationAcceptRequest(kp, token));
                break;
            case "expired":
                _g.Clock.Advance(MigrationLifetime + TimeSpan.FromSeconds(1));
                break;
            case "kp-changed":
                // Another key protector of the same VM, as valid as the first: not the one authorised.
                (kp, _) = NewKp("prod");
                break;
            case "binding-key-changed":
                (token, _) = await AttestAsync(m.Destination);
                break;
            case "destination-failed-since":
                var host = (await Store.GetHostAsync(m.Destination.HostId!))!;
                await Store.UpdateHostAsync(host with { State = HostStates.Failed });
                break;
            case "unknown":
                migrationId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
                break;
            default:
                throw new ArgumentException("no such case: " + @case);
        }
        return (migrationId, token, kp);
    }

    [Theory]
    [InlineData("wrong-host", "migration.wrong-host", 403)]
    [InlineData("the-source", "migration.wrong-host", 403)]
    [InlineData("accepted-already", "migration.used", 409)]
    [InlineData("checked-already", "migration.used", 409)]
    [InlineData("expired", "migration.expired", 410)]
    [InlineData("binding-key-changed", "migration.binding-key.changed", 403)]
    [InlineData("destination-failed-since", "migration.destination.host.not-healthy", 403)]
    [InlineData("unknown", "migration.unknown", 404)]
    public async Task Check_refuses_and_audits_and_releases_nothing(string @case, string id, int status)
    {
        using var m = await AuthorisedAsync();
        using var third = @case == "wrong-host" ? await HostInAsync("prod") : null;
        var (migrationId, token, _) = await DestinationCaseAsync(m, @case, third);

        Assert.Equal((id, status), await RefusalAsync(() => _client.CheckMigrationAsync(migrationId, new MigrationCheckRequest(token))));
        var audit = await AuditAsync();
        var refused = Assert.Single(audit, r => r.Kind == "vm.migration-refused");
        Assert.Equal((id, "check", migrationId), (refused.Data["reason"]!.GetValue<string>(), refused.Data["step"]!.GetValue<string>(),
            refused.Data["migrationId"]!.GetValue<string>()));
        Assert.Equal(@case == "unknown" ? "vm:?" : "vm:" + VmId, refused.Subject);
        Assert.Equal(@case == "accepted-already" ? 2 : 1, audit.Count(r => r.Kind == "key.released"));
    }

    [Theory]
    [InlineData("wrong-host", "migration.wrong-host", 403)]
    [InlineData("twice", "migration.used", 409)]
    [InlineData("expired", "migration.expired", 410)]
    [InlineData("kp-changed", "migration.kp.changed", 400)]
    [InlineData("binding-key-changed", "migration.binding-key.changed", 403)]
    [InlineData("destination-failed-since", "migration.destination.host.not-healthy", 403)]
    [InlineData("unknown", "migration.unknown", 404)]
    public async Task Accept_refuses_and_audits(string @case, string id, int status)
    {
        using var m = await AuthorisedAsync();
        using var third = @case == "wrong-host" ? await HostInAsync("prod") : null;
        var (migrationId, token, kp) = await DestinationCaseAsync(m, @case, third);

        Assert.Equal((id, status), await RefusalAsync(() => _client.AcceptMigrationAsync(migrationId, new MigrationAcceptRequest(kp, token))));
        var audit = await AuditAsync();
        var refused = Assert.Single(audit, r => r.Kind == "vm.migration-refused");
        Assert.Equal((id, "accept", migrationId), (refused.Data["reason"]!.GetValue<string>(), refused.Data["step"]!.GetValue<string>(),
            refused.Data["migrationId"]!.GetValue<string>()));
        // Only the source's release (and the one accept that won, when accepted twice).
        Assert.Equal(@case == "twice" ? 2 : 1, audit.Count(r => r.Kind == "key.released"));
    }

    [Theory]
    [InlineData("wrong-host", "migration.wrong-host", 403)]
    [InlineData("twice", "migration.completed-already", 409)]
    [InlineData("unknown", "migration.unknown", 404)]
    [InlineData("outcome", "migration.outcome", 400)]
    [InlineData("reason", "migration.reason", 400)]
    public async Task Complete_refuses_and_audits(string @case, string id, int status)
    {
        using var m = await AuthorisedAsync();
        await _client.AcceptMigrationAsync(m.Answer.MigrationId, new MigrationAcceptRequest(m.Kp, m.DestinationToken));
        var (migrationId, token, outcome, reason) = (m.Answer.MigrationId, m.SourceToken, "failed", "destination did not start");
        switch (@case)
        {
            case "wrong-host":
                token = m.DestinationToken;
                break;
            case "twice":
                await CompleteAsync(_client, migrationId, token, outcome, reason);
                break;
            case "unknown":
                migrationId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
                break;
            case "outcome":
                outcome = "done";
                break;
            case "reason":
                reason = "ok\u001b[2J";
                break;
        }

        Assert.Equal((id, status), await RefusalAsync(() => CompleteAsync(_client, migrationId, token, outcome, reason)));
        var audit = await AuditAsync();
        var refused = Assert.Single(audit, r => r.Kind == "vm.migration-refused");
        Assert.Equal((id, "complete"), (refused.Data["reason"]!.GetValue<string>(), refused.Data["step"]!.GetValue<string>()));
        Assert.Equal(@case == "twice" ? 1 : 0, audit.Count(r => r.Kind == "vm.migration-failed"));
    }

    [Fact]
    public async Task Unknown_migration_is_404_on_the_wire_and_a_late_report_after_retention_is_unknown()
    {
        using var m = await AuthorisedAsync();
        using var http = new HttpClient { BaseAddress = _g.Url };
        var response = await http.PostAsync($"v1/migrations/{m.Answer.MigrationId}x/accept",
            System.Net.Http.Json.JsonContent.Create(new MigrationAcceptRequest(m.Kp, m.DestinationToken)));
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("migration.unknown", JsonNode.Parse(await response.Content.ReadAsStringAsync())!["title"]!.GetValue<string>());

        // Kept 10 minutes past its expiry for the report, then forgotten.
        _g.Clock.Advance(MigrationLifetime + TimeSpan.FromMinutes(10));
        Assert.Equal(("migration.unknown", 404), await RefusalAsync(() => CompleteAsync(_client, m.Answer.MigrationId, m.SourceToken)));
    }

    private static TimeSpan MigrationLifetime => Rempart.Guardian.Release.MigrationService.Lifetime;
}

using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rempart.Attestation.Protocol;
using Rempart.Host.Attestation;
using Rempart.Host.Guardian;
using Rempart.Host.Keys;
using Rempart.KeyProtection;
using Rempart.Tpm;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Transport;

namespace Rempart.Host.Agent;

/// <summary>What the agent was started with.</summary>
public sealed record HostAgentOptions(
    Uri Guardian,
    string? GuardianFingerprint,
    string TpmAddress,
    string DataDir,
    string EventLogPath,
    string Hostname,
    TimeSpan Period);

/// <summary>The agent's view of its host, for <c>rempart host status</c>.</summary>
public sealed record HostAgentStatus(
    string? HostId,
    string State,
    DateTimeOffset? LastAttestedAt,
    DateTimeOffset? TokenExpiresAt,
    string? LastError,
    bool RebootDetected,
    int Attestations);

/// <summary>
/// The host agent's attestation half (issue 6 §1): enrols on first run (the host id is kept in
/// DATA/host.json), then attests every period, keeping the latest health token in memory only and
/// the binding key's TPM-wrapped blobs in DATA/binding.json (useless without this TPM's SRK). It
/// asks the Guardian for VM keys with that token and recovers them in the TPM. All TPM work is
/// serialised: one command sequence at a time, on a connection opened for it (swtpm serves one
/// client at a time). Never throws out of <see cref="AttestOnceAsync"/>: failures become the status.
/// </summary>
public sealed class HostAgent : IDisposable, IMigrationHost
{
    private readonly HostAgentOptions _options;
    private readonly GuardianClient _guardian;
    private readonly SemaphoreSlim _tpmGate = new(1, 1);
    private readonly object _sync = new();
    private string? _hostId;
    private string _state = "starting";
    private string? _token;
    private DateTimeOffset? _tokenExpires;
    private DateTimeOffset? _lastAttested;
    private string? _lastError;
    private bool _reboot;
    private int _attestations;
    private Binding? _binding;
    private bool _tpmSwept;

    private sealed record Binding(byte[] Private, TpmtPublic Public, TpmlPcrSelection Pcrs);

    public HostAgent(HostAgentOptions options)
    {
        _options = options;
        Directory.CreateDirectory(options.DataDir);
        // rwx--x--x: the VM user passes through to the files of a running VM (DATA/vms/NAME/disks); nothing here is listable or readable by others.
        File.SetUnixFileMode(options.DataDir, VmManager.Traversable);
        _guardian = new GuardianClient(options.Guardian, options.GuardianFingerprint);
        var hostFile = Path.Combine(options.DataDir, "host.json");
        if (File.Exists(hostFile))
        {
            _hostId = JsonNode.Parse(File.ReadAllText(hostFile))?["hostId"]?.GetValue<string>()
                ?? throw new InvalidDataException($"{hostFile}: no hostId");
        }
    }

    public HostAgentStatus Status
    {
        get
        {
            lock (_sync)
            {
                return new HostAgentStatus(_hostId, _state, _lastAttested, _tokenExpires, _lastError, _reboot, _attestations);
            }
        }
    }

    /// <summary>Runs the attestation loop until <paramref name="ct"/> is cancelled.</summary>
    public async Task RunAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            await AttestOnceAsync(ct);
            try
            {
                await Task.Delay(_options.Period, ct);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>Enrols if needed, then attests once. The result is in <see cref="Status"/>.</summary>
    public async Task AttestOnceAsync(CancellationToken ct)
    {
        try
        {
            if (_hostId is null)
            {
                await EnrolAsync(ct);
            }
            var log = File.Exists(_options.EventLogPath) ? await File.ReadAllBytesAsync(_options.EventLogPath, ct)
                : throw new FileNotFoundException($"event log {_options.EventLogPath} not found");
            var nonce = await _guardian.NonceAsync(_hostId!, ct);
            var collected = await WithTpmAsync(tpm => new EvidenceCollector(tpm).Collect(_hostId!, Convert.FromHexString(nonce.Nonce), log), ct);
            var result = await _guardian.AttestAsync(collected.Evidence, ct);
            lock (_sync)
            {
                _attestations++;
                _lastAttested = DateTimeOffset.UtcNow;
                _reboot = result.RebootDetected;
                if (result.Token is { } token)
                {
                    _state = result.Status;
                    _token = token;
                    _tokenExpires = result.ExpiresAt;
                    _binding = new Binding(collected.BindingKeyPrivate, collected.BindingKeyPublic, collected.BindingPcrs);
                    _lastError = null;
                }
                else
                {
                    _state = result.Status;
                    _token = null;
                    _tokenExpires = null;
                    _lastError = string.Join("; ", result.Failures.Select(f => $"{f.Id}: {f.Message}"));
                }
            }
            if (result.Token is not null)
            {
                SaveBinding(collected);
            }
        }
        catch (GuardianException e) when (e.Id == "attest.host.pending")
        {
            SetState("pending", $"{e.Id}: waiting for an admin's approval (rempart host approve {_hostId} --group G)");
        }
        catch (Exception e) when (e is GuardianException or TpmException or TpmTransportException or EvidenceCollectionException
            or IOException or FormatException or InvalidDataException or Tpm.Marshal.TpmFormatException)
        {
            SetState(_token is null ? "error" : _state, e is GuardianException g ? $"{g.Id}: {g.Message}" : e.Message);
        }
    }

    /// <summary>
    /// Asks the Guardian for a VM's key with the current health token and recovers it in this
    /// TPM (TPM2_RSA_Decrypt under the binding key's PolicyPCR), then checks the key protector's
    /// MAC with it. The caller disposes the key (which wipes it).
    /// </summary>
    public async Task<(VmMasterKey Key, ReleaseResponse Release)> ReleaseAsync(string keyProtector, CancellationToken ct)
    {
        var me = CurrentCredential();
        var kp = KeyProtector.Parse(System.Text.Encoding.UTF8.GetBytes(keyProtector)); // a malformed one is refused here, not by the Guardian
        var release = await _guardian.ReleaseAsync(new ReleaseRequest(keyProtector, me.Token), ct);
        return (await UnwrapAsync(release, kp, me, ct), release);
    }

    /// <summary>The current health token and binding key, taken together: a migration uses one pair from start to end, whatever the attestation loop does meanwhile.</summary>
    public HostCredential CurrentCredential()
    {
        lock (_sync)
        {
            if (_token is null || _binding is null || _hostId is null || _tokenExpires <= DateTimeOffset.UtcNow)
            {
                throw new HostAgentException("agent.no-token", $"this host has no valid health token (state {_state}{(_lastError is null ? "" : ": " + _lastError)})");
            }
            return new HostCredential(_hostId, _token, _binding.Private, _binding.Public, _binding.Pcrs);
        }
    }

    public Task<MigrationAuthorisation> AuthoriseMigrationAsync(string keyProtector, string destinationToken, HostCredential me, CancellationToken ct) =>
        _guardian.AuthoriseMigrationAsync(new MigrationAuthoriseRequest(keyProtector, me.Token, destinationToken), ct);

    public Task<MigrationCheck> CheckMigrationAsync(string migrationId, HostCredential me, CancellationToken ct) =>
        _guardian.CheckMigrationAsync(migrationId, new MigrationCheckRequest(me.Token), ct);

    public Task<MigrationAcceptance> AcceptMigrationAsync(string migrationId, string keyProtector, HostCredential me, CancellationToken ct) =>
        _guardian.AcceptMigrationAsync(migrationId, new MigrationAcceptRequest(keyProtector, me.Token), ct);

    public Task CompleteMigrationAsync(string migrationId, string outcome, string? reason, HostCredential me, CancellationToken ct) =>
        _guardian.CompleteMigrationAsync(migrationId, new MigrationCompleteRequest(me.Token, outcome, reason), ct);

    /// <summary>Recovers a released key in this TPM with the credential's binding key and checks the key protector's MAC with it.</summary>
    public Task<VmMasterKey> UnwrapAsync(ReleaseResponse release, string keyProtector, HostCredential me, CancellationToken ct) =>
        UnwrapAsync(release, KeyProtector.Parse(System.Text.Encoding.UTF8.GetBytes(keyProtector)), me, ct);

    private async Task<VmMasterKey> UnwrapAsync(ReleaseResponse release, KeyProtector kp, HostCredential me, CancellationToken ct)
    {
        var key = await WithTpmAsync(tpm => new ReleaseUnwrapper(tpm).Unwrap(me.BindingPrivate, me.BindingPublic, me.BindingPcrs, release), ct);
        try
        {
            kp.VerifyIntegrity(key);
        }
        catch
        {
            key.Dispose();
            throw;
        }
        return key;
    }

    /// <summary>Opens a migration channel share wrapped to this host's binding key (TPM2_RSA_Decrypt under its PolicyPCR).</summary>
    public Task<byte[]> DecryptShareAsync(byte[] wrapped, byte[] label, HostCredential me, CancellationToken ct) =>
        WithTpmAsync(tpm => new ReleaseUnwrapper(tpm).DecryptShare(me.BindingPrivate, me.BindingPublic, me.BindingPcrs, wrapped, label), ct);

    private async Task EnrolAsync(CancellationToken ct)
    {
        var request = await WithTpmAsync(tpm => new HostIdentity(tpm).BuildRequest(_options.Hostname), ct);
        var challenge = await _guardian.StartEnrolmentAsync(request, ct);
        var answer = await WithTpmAsync(tpm => new CredentialActivator(tpm).Answer(challenge), ct);
        var enrolled = await _guardian.ActivateAsync(challenge.EnrolmentId, answer, ct);
        WriteAtomically(Path.Combine(_options.DataDir, "host.json"), new JsonObject { ["hostId"] = enrolled.HostId }.ToJsonString());
        _hostId = enrolled.HostId;
        SetState(enrolled.State, null);
    }

    private void SaveBinding(CollectedEvidence c) =>
        WriteAtomically(Path.Combine(_options.DataDir, "binding.json"), JsonSerializer.Serialize(new
        {
            @private = Convert.ToBase64String(c.BindingKeyPrivate),
            @public = Convert.ToBase64String(c.BindingKeyPublic.ToSizedBytes()),
        }));

    private async Task<T> WithTpmAsync<T>(Func<TpmClient, T> work, CancellationToken ct)
    {
        await _tpmGate.WaitAsync(ct);
        try
        {
            return await Task.Run(() =>
            {
                using var tpm = TpmClient.Open(_options.TpmAddress);
                if (!_tpmSwept)
                {
                    SweepLeftovers(tpm);
                    _tpmSwept = true;
                }
                return work(tpm);
            }, ct);
        }
        finally
        {
            _tpmGate.Release();
        }
    }

    /// <summary>
    /// An agent killed in the middle of a TPM command sequence leaves its transient objects and
    /// sessions loaded in a TPM without a resource manager (swtpm's socket; /dev/tpmrm0 flushes them
    /// itself): a few of those and every TPM2_CreatePrimary fails with TPM_RC_OBJECT_MEMORY. The first
    /// TPM use of each agent process flushes whatever transient objects and loaded sessions it finds:
    /// nothing else uses this TPM (the agent is its only client), and persistent objects are not touched.
    /// </summary>
    private static void SweepLeftovers(TpmClient tpm)
    {
        foreach (var h in tpm.GetHandles(0x80000000).Where(h => h < 0x81000000)
            .Concat(tpm.GetHandles(0x02000000).Where(h => h >> 24 is 0x02 or 0x03)))
        {
            try
            {
                tpm.FlushContext(h);
            }
            catch (TpmException)
            {
                // gone meanwhile, or not flushable: the command that needs the room will say so
            }
        }
    }

    private void SetState(string state, string? error)
    {
        lock (_sync)
        {
            _state = state;
            _lastError = error;
        }
    }

    private static void WriteAtomically(string path, string text)
    {
        var tmp = path + ".tmp-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        using (var f = new FileStream(tmp, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite }))
        {
            f.Write(System.Text.Encoding.UTF8.GetBytes(text));
            f.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
    }

    public void Dispose()
    {
        _guardian.Dispose();
        _tpmGate.Dispose();
    }
}

/// <summary>A health token with the binding key it certifies (the private part TPM-wrapped, useless off this TPM).</summary>
public sealed record HostCredential(string HostId, string Token, byte[] BindingPrivate, TpmtPublic BindingPublic, TpmlPcrSelection BindingPcrs);

/// <summary>What a live migration needs from the host's attestation side (<see cref="HostAgent"/>; docs/migration.md).</summary>
public interface IMigrationHost
{
    HostCredential CurrentCredential();

    Task<MigrationAuthorisation> AuthoriseMigrationAsync(string keyProtector, string destinationToken, HostCredential me, CancellationToken ct);

    Task<MigrationCheck> CheckMigrationAsync(string migrationId, HostCredential me, CancellationToken ct);

    Task<MigrationAcceptance> AcceptMigrationAsync(string migrationId, string keyProtector, HostCredential me, CancellationToken ct);

    Task CompleteMigrationAsync(string migrationId, string outcome, string? reason, HostCredential me, CancellationToken ct);

    Task<VmMasterKey> UnwrapAsync(ReleaseResponse release, string keyProtector, HostCredential me, CancellationToken ct);

    Task<byte[]> DecryptShareAsync(byte[] wrapped, byte[] label, HostCredential me, CancellationToken ct);
}

/// <summary>The agent cannot do what was asked (no token yet, …); <see cref="Id"/> is stable.</summary>
public sealed class HostAgentException(string id, string message) : Exception(message)
{
    public string Id { get; } = id;
}

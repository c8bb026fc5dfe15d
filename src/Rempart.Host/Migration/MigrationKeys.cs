using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Rempart.Attestation.Protocol;
using Rempart.KeyProtection;
using Rempart.Tpm.Crypto;
using Rempart.Tpm.Structures;

namespace Rempart.Host.Migration;

/// <summary>
/// The key schedule of a live migration's channel (docs/migration.md "Channel"). Three inputs, so
/// that no single party can read the stream:
/// <list type="bullet">
/// <item>Ks, 32 random bytes of the source, RSA-OAEP-SHA256-wrapped to the destination's binding key
/// (label <c>rempart/migration/v1/&lt;id&gt;/s</c>): only the destination's TPM, in its attested boot
/// state, opens it;</item>
/// <item>Kd, the same the other way (label <c>…/d</c>), wrapped to the source's binding key;</item>
/// <item>Kvm = HKDF(VMK, <c>migration/&lt;id&gt;</c>) (DESIGN.md §3.5): only hosts the Guardian released the
/// VM's key to, for this migration, have it.</item>
/// </list>
/// The binding keys come from the Guardian's migration record (both hosts attested and healthy at
/// authorisation). The Guardian could compute Kvm but never sees Ks or Kd; a host that is not one of
/// the two attested ends has neither. PRK = HKDF-Extract(salt = transcript hash, Ks ‖ Kd ‖ Kvm);
/// one key per direction and a confirmation key are expanded from it; each side proves it holds the
/// keys with HMAC(confirm key, role ‖ transcript hash) before any VM byte moves.
/// </summary>
public static class MigrationKeys
{
    public const string Protocol = "rempart-migration/3";
    public const int ShareLength = 32;
    public const string LabelPrefix = "rempart/migration/v1/";

    /// <summary>The label of a share wrapped to the destination (<c>s</c>, from the source) or to the source (<c>d</c>).</summary>
    public static string Label(string migrationId, char from)
    {
        if (migrationId.Length != 32 || !migrationId.All(char.IsAsciiHexDigitLower) || from is not ('s' or 'd'))
        {
            throw new MigrationChannelException("migration.id", "a migration id is 32 lowercase hex digits");
        }
        return $"{LabelPrefix}{migrationId}/{from}";
    }

    /// <summary>Wraps a share to a peer's binding key (its public area as the Guardian recorded it).</summary>
    public static byte[] WrapShare(TpmtPublic peerBindingKey, ReadOnlySpan<byte> share, string migrationId, char from)
    {
        if (ReleaseWrap.Unsupported(peerBindingKey) is { } why)
        {
            throw new MigrationChannelException("migration.binding-key", "the other host's binding key cannot receive a share: " + why);
        }
        return SecretSharing.RsaOaepEncrypt(peerBindingKey, share, Label(migrationId, from));
    }

    /// <summary>The TPM2_RSA_Decrypt label (with its terminating zero) of a share.</summary>
    public static byte[] DecryptLabel(string migrationId, char from) => [.. Encoding.ASCII.GetBytes(Label(migrationId, from)), 0];

    /// <summary>The peer's binding public key from the Guardian's record, checked against its Name.</summary>
    public static TpmtPublic PeerBindingKey(MigrationPeer peer)
    {
        TpmtPublic key;
        try
        {
            key = TpmtPublic.ParseSized(System.Buffers.Text.Base64Url.DecodeFromChars(peer.BindingPublic));
        }
        catch (Exception e) when (e is FormatException or Rempart.Tpm.Marshal.TpmFormatException)
        {
            throw new MigrationChannelException("migration.binding-key", $"the Guardian's record of host {peer.HostId} has no readable binding key", e);
        }
        if (!string.Equals(Convert.ToHexStringLower(key.Name()), peer.BindingKey, StringComparison.Ordinal))
        {
            throw new MigrationChannelException("migration.binding-key", $"host {peer.HostId}'s binding key does not match its Name");
        }
        return key;
    }

    /// <summary>
    /// SHA-256 over every field both sides must agree on, each length-prefixed; the last is the binding of
    /// the handshake's key exchange (<see cref="SecureChannel.ProtectHandshakeAsync"/>), so a handshake
    /// relayed through someone who ran that exchange with each side gives two transcripts.
    /// </summary>
    public static byte[] Transcript(string migrationId, string vmId, MigrationPeer source, MigrationPeer destination, ReadOnlySpan<byte> wrappedKs, ReadOnlySpan<byte> wrappedKd,
        ReadOnlySpan<byte> handshakeBinding)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var s in new[] { Protocol, migrationId, vmId, source.HostId, source.BindingKey, destination.HostId, destination.BindingKey })
        {
            AppendField(h, Encoding.UTF8.GetBytes(s));
        }
        AppendField(h, wrappedKs);
        AppendField(h, wrappedKd);
        AppendField(h, handshakeBinding);
        return h.GetHashAndReset();
    }

    /// <summary>Hashes one field as u32 big-endian length ‖ bytes, so that no field runs into the next.</summary>
    internal static void AppendField(IncrementalHash h, ReadOnlySpan<byte> field)
    {
        Span<byte> len = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(len, field.Length);
        h.AppendData(len);
        h.AppendData(field);
    }

    /// <summary>The label of the destination's proof key (<see cref="DestinationProof"/>).</summary>
    public const string ProofLabel = "rempart/migration/v3/destination-proof";

    /// <summary>
    /// The destination's proof that it opened Ks in its TPM on <i>this</i> connection, before the source says
    /// anything about the VM: HMAC-SHA256(HKDF-SHA256(Ks, salt = handshake binding, <see cref="ProofLabel"/>),
    /// <c>destination\0</c> ‖ Ks's label). Ks opens only in the TPM of the binding key the Guardian vouched
    /// for, in its attested state; the binding differs on each side of someone in the middle who ran the key
    /// exchange with each, so a relayed proof does not match.
    /// </summary>
    public static byte[] DestinationProof(ReadOnlySpan<byte> ks, ReadOnlySpan<byte> handshakeBinding, string migrationId)
    {
        if (ks.Length != ShareLength)
        {
            throw new MigrationChannelException("migration.share", $"a channel share is {ShareLength} bytes");
        }
        var key = new byte[32];
        try
        {
            HKDF.DeriveKey(HashAlgorithmName.SHA256, ks, key, handshakeBinding, Encoding.ASCII.GetBytes(ProofLabel));
            return HMACSHA256.HashData(key, Encoding.ASCII.GetBytes("destination\0" + Label(migrationId, 's')));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    /// <summary>Checks the destination's proof in constant time (<c>migration.channel.proof</c>).</summary>
    public static void CheckDestinationProof(ReadOnlySpan<byte> ks, ReadOnlySpan<byte> handshakeBinding, string migrationId, byte[]? given)
    {
        var expected = DestinationProof(ks, handshakeBinding, migrationId);
        if (given is null || !CryptographicOperations.FixedTimeEquals(expected, given))
        {
            throw new MigrationChannelException("migration.channel.proof",
                "the destination could not prove it opened the share wrapped to the binding key the Guardian vouched for on this connection (not the attested host, or someone in the middle): nothing about the VM was sent");
        }
    }

    /// <summary>The channel's keys. Dispose wipes them.</summary>
    public sealed class Schedule : IDisposable
    {
        public byte[] SourceToDestination { get; } = new byte[32];
        public byte[] DestinationToSource { get; } = new byte[32];
        private readonly byte[] _confirm = new byte[32];
        private readonly byte[] _transcript;

        public Schedule(ReadOnlySpan<byte> ks, ReadOnlySpan<byte> kd, VmMasterKey vmk, string migrationId, byte[] transcript)
        {
            if (ks.Length != ShareLength || kd.Length != ShareLength)
            {
                throw new MigrationChannelException("migration.share", $"a channel share is {ShareLength} bytes");
            }
            _transcript = transcript;
            var ikm = new byte[ShareLength * 3];
            var prk = new byte[32];
            try
            {
                ks.CopyTo(ikm);
                kd.CopyTo(ikm.AsSpan(ShareLength));
                VmKeys.Derive(vmk.Bytes, VmKeys.Migration(migrationId), ikm.AsSpan(ShareLength * 2));
                HKDF.Extract(HashAlgorithmName.SHA256, ikm, transcript, prk);
                HKDF.Expand(HashAlgorithmName.SHA256, prk, SourceToDestination, Encoding.ASCII.GetBytes(LabelPrefix + "source-to-destination"));
                HKDF.Expand(HashAlgorithmName.SHA256, prk, DestinationToSource, Encoding.ASCII.GetBytes(LabelPrefix + "destination-to-source"));
                HKDF.Expand(HashAlgorithmName.SHA256, prk, _confirm, Encoding.ASCII.GetBytes(LabelPrefix + "confirm"));
            }
            finally
            {
                CryptographicOperations.ZeroMemory(ikm);
                CryptographicOperations.ZeroMemory(prk);
            }
        }

        /// <summary>HMAC-SHA256(confirm key, role ‖ transcript hash); role is <c>source</c> or <c>destination</c>.</summary>
        public byte[] Confirmation(string role) =>
            HMACSHA256.HashData(_confirm, (byte[])[.. Encoding.ASCII.GetBytes(role + "\0"), .. _transcript]);

        /// <summary>Checks the peer's confirmation in constant time.</summary>
        public void CheckConfirmation(string role, byte[]? given)
        {
            var expected = Confirmation(role);
            if (given is null || !CryptographicOperations.FixedTimeEquals(expected, given))
            {
                throw new MigrationChannelException("migration.channel.confirm", $"the {role} host could not prove it holds the channel keys (not the attested host, or a different transcript)");
            }
        }

        public void Dispose()
        {
            CryptographicOperations.ZeroMemory(SourceToDestination);
            CryptographicOperations.ZeroMemory(DestinationToSource);
            CryptographicOperations.ZeroMemory(_confirm);
        }
    }
}

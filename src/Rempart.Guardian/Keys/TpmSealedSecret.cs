using System.Security.Cryptography;
using System.Text.Json;
using Rempart.KeyProtection;
using Rempart.Tpm;
using Rempart.Tpm.Marshal;
using Rempart.Tpm.Structures;
using Rempart.Tpm.Transport;

namespace Rempart.Guardian.Keys;

/// <summary>
/// Binds the file provider's keys to the Guardian machine's TPM: a random 32-byte secret sealed
/// under the TPM's storage root key (a KEYEDHASH object, fixedTPM and fixedParent, TPM 2.0
/// Part 1 §25.5 / Part 3 §12.1 Create, §12.7 Unseal) is kept as <c>DIR/keys/tpm-sealed-secret.json</c>
/// (its public and encrypted private areas). The password of every key file is then
/// HMAC-SHA256(TPM secret, operator secret): a copy of the data folder needs both the operator's
/// secret and this machine's TPM. Chosen at first start (a folder whose keys were made without it
/// refuses it, and a sealed folder refuses to start without it).
/// </summary>
public static class TpmSealedSecret
{
    public const string FileName = "tpm-sealed-secret.json";

    private sealed record Sealed(int Version, string Srk, string Public, string Private);

    /// <summary>True when the data folder's keys are sealed to a TPM.</summary>
    public static bool IsSealed(string dataDir) => File.Exists(Path.Combine(dataDir, "keys", FileName));

    /// <summary>The key-file password for <paramref name="dataDir"/>: unsealed from the TPM at <paramref name="tpmAddress"/>, or sealed there at first start.</summary>
    public static byte[] Password(string dataDir, string tpmAddress, ReadOnlySpan<byte> operatorSecret)
    {
        var keysDir = Path.Combine(dataDir, "keys");
        var path = Path.Combine(keysDir, FileName);
        byte[] tpmSecret;
        try
        {
            using var tpm = TpmClient.Open(tpmAddress);
            if (File.Exists(path))
            {
                tpmSecret = Unseal(tpm, Read(path));
            }
            else
            {
                if (Directory.Exists(keysDir) && Directory.EnumerateFiles(keysDir, "*.p8").Any())
                {
                    throw new KeyProviderException("keys.tpm.existing",
                        $"the keys in {keysDir} were made without TPM sealing: sealing is chosen when a Guardian's keys are first made (start without --key-secret-tpm)");
                }
                AtomicFile.EnsurePrivateDirectory(keysDir);
                tpmSecret = RandomNumberGenerator.GetBytes(32);
                var sealedObject = Seal(tpm, tpmSecret);
                AtomicFile.Write(path, JsonSerializer.SerializeToUtf8Bytes(sealedObject));
                // Read back through the TPM before any key depends on it.
                if (!CryptographicOperations.FixedTimeEquals(Unseal(tpm, sealedObject), tpmSecret))
                {
                    throw new KeyProviderException("keys.tpm.unseal", "the TPM did not return the secret it just sealed");
                }
            }
        }
        catch (Exception e) when (e is TpmException or IOException or System.Net.Sockets.SocketException or ArgumentException or TpmFormatException)
        {
            throw new KeyProviderException("keys.tpm.unseal",
                $"cannot use the TPM at {tpmAddress} for {path} ({e.Message}): the keys of this data folder open only on the machine (TPM) they were sealed to", e);
        }
        try
        {
            return HMACSHA256.HashData(tpmSecret, operatorSecret);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(tpmSecret);
        }
    }

    private static Sealed Seal(TpmClient tpm, byte[] secret)
    {
        var srk = tpm.CreateSrk("ecc");
        try
        {
            // userWithAuth with an empty authValue: whoever can talk to this TPM (root, through
            // /dev/tpmrm0) can unseal; no one can without it.
            var template = new TpmtPublic(TpmAlgId.KeyedHash, TpmAlgId.Sha256,
                TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.UserWithAuth | TpmaObject.NoDa, [],
                new TpmsKeyedHashParms(TpmtScheme.Null), new TpmBufferId([]));
            var created = tpm.Create(srk.Handle!, template, new TpmsSensitiveCreate([], secret));
            var w = new TpmWriter();
            created.Public.WriteSized(w);
            return new Sealed(1, "ecc", Convert.ToBase64String(w.ToArray()), Convert.ToBase64String(created.Private));
        }
        finally
        {
            tpm.FlushContext(srk.Handle!.Value);
        }
    }

    private static byte[] Unseal(TpmClient tpm, Sealed s)
    {
        var srk = tpm.CreateSrk(s.Srk);
        try
        {
            var item = tpm.Load(srk.Handle!, Convert.FromBase64String(s.Private), TpmtPublic.ParseSized(Convert.FromBase64String(s.Public)));
            try
            {
                return tpm.Unseal(item);
            }
            finally
            {
                tpm.FlushContext(item.Value);
            }
        }
        finally
        {
            tpm.FlushContext(srk.Handle!.Value);
        }
    }

    private static Sealed Read(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<Sealed>(File.ReadAllBytes(path)) is { Version: 1, Srk: "ecc" or "rsa" } s
                ? s
                : throw new KeyProviderException("keys.tpm.unseal", $"{path} is not a version 1 sealed secret");
        }
        catch (JsonException e)
        {
            throw new KeyProviderException("keys.tpm.unseal", $"{path} is not a sealed secret ({e.Message})", e);
        }
    }
}

using System.Buffers.Binary;

namespace Rempart.Tpm;

/// <summary>
/// A handle and the Name the TPM binds into command HMACs (Part 1, §16): for objects and NV
/// indexes the digest of their public area, for permanent handles, PCRs and sessions the
/// handle value itself. <see cref="Auth"/> is the entity's authValue, used by HMAC sessions
/// that authorise it; it is a secret and never printed.
/// </summary>
public sealed class TpmHandle
{
    public TpmHandle(uint value, byte[]? name = null, byte[]? auth = null)
    {
        Value = value;
        Name = name ?? HandleName(value);
        Auth = auth ?? [];
    }

    public uint Value { get; }

    public byte[] Name { get; }

    public byte[] Auth { get; }

    public static TpmHandle Owner { get; } = new(TpmRh.Owner);

    public static TpmHandle Endorsement { get; } = new(TpmRh.Endorsement);

    public static TpmHandle Platform { get; } = new(TpmRh.Platform);

    public static TpmHandle Null { get; } = new(TpmRh.Null);

    public static TpmHandle Pcr(int index) => new((uint)index);

    public TpmHandle WithAuth(byte[] auth) => new(Value, Name, auth);

    public static byte[] HandleName(uint value)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, value);
        return b;
    }

    public override string ToString() => $"0x{Value:x8}";
}

namespace Rempart.Host.Vm;

/// <summary>
/// A VM bundle, one of its files, or a tool working on it failed. <see cref="Id"/> is stable
/// (docs/vm-bundle.md, "Failure ids"): <c>bundle.format</c>, <c>bundle.missing</c>,
/// <c>bundle.permissions</c>, <c>bundle.exists</c>, <c>disk.key</c>, <c>disk.tool</c>,
/// <c>disk.format</c>, <c>nvram.format</c>, <c>nvram.integrity</c>, <c>vtpm.setup</c>,
/// <c>vtpm.key</c>, <c>vtpm.start</c>, <c>tool.missing</c>. Messages never contain key material.
/// </summary>
public sealed class VmBundleException(string id, string message, Exception? inner = null) : Exception(message, inner)
{
    public string Id { get; } = id;

    public override string ToString() => $"{Id}: {base.ToString()}";
}

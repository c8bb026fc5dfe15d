namespace Rempart.Host.Qemu;

/// <summary>QEMU answered a command with an error (QMP spec §2.4.2: <c>{"error": {"class", "desc"}}</c>).</summary>
public sealed class QmpException(string command, string errorClass, string description)
    : Exception($"QMP {command}: {errorClass}: {description}")
{
    public string Command { get; } = command;

    /// <summary>QEMU's error class: <c>GenericError</c>, <c>CommandNotFound</c>, <c>DeviceNotFound</c>, <c>DeviceNotActive</c>, <c>KVMMissingCap</c>.</summary>
    public string ErrorClass { get; } = errorClass;

    public string Description { get; } = description;
}

/// <summary>
/// The peer broke the QMP protocol (malformed JSON, an unknown message shape, a reply to no
/// command, a closed connection): the connection is unusable and is closed.
/// </summary>
public sealed class QmpProtocolException(string id, string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>Stable identifier: <c>qmp.json</c>, <c>qmp.greeting</c>, <c>qmp.message</c>, <c>qmp.reply.id</c>, <c>qmp.line-too-long</c>, <c>qmp.closed</c>.</summary>
    public string Id { get; } = id;
}

/// <summary>The agent's allowlist refused a QMP command; it never reached QEMU.</summary>
public sealed class QmpRefusedException(QmpDecision decision, string command)
    : Exception($"QMP {command} refused ({decision.RefusalId}): {decision.Reason}")
{
    public string Command { get; } = command;

    /// <summary>The rule that refused it, e.g. <c>qmp.refused.memory-read</c>.</summary>
    public string RefusalId { get; } = decision.RefusalId ?? "qmp.refused";
}

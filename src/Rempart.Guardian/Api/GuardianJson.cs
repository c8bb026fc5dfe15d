using System.Text.Json;
using System.Text.Json.Serialization;
using Rempart.Attestation.Protocol;
using Rempart.Guardian.Attestation;

namespace Rempart.Guardian.Api;

/// <summary>
/// Source-generated JSON contracts of the host-facing attestation messages (every host sends a
/// nonce request and its evidence at each period): read and written without reflection. Other
/// types fall through to the default resolver (GuardianServer puts this first in the chain).
/// </summary>
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(NonceRequest))]
[JsonSerializable(typeof(NonceResponse))]
[JsonSerializable(typeof(AttestationEvidence))]
[JsonSerializable(typeof(AttestationResult))]
[JsonSerializable(typeof(EvidenceBytes))]
internal sealed partial class GuardianJson : JsonSerializerContext;

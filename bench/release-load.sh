#!/usr/bin/env bash
# The key release benchmark (bench/README.md, "Key release"): builds the Guardian (Release) and the
# benchmark into a private output, checks that SoftHSM2 is installed (scripts/softhsm.sh makes a
# fresh token per run), then runs the file provider and the pkcs11 provider one after the other,
# each with a closed loop (capacity) then an open loop at half that rate (latency). Next to each
# provider's raw ECDH rate, `openssl speed ecdhp384` (one process, then -multi with one process per
# core) gives an independent raw rate in the same run (--openssl-seconds, default 3; 0 skips it).
#
#   bash bench/release-load.sh [rempart-releasebench options]     e.g. --duration 30 --format json
#
# RELBENCH_ARTIFACTS: the build output (default /tmp/rempart-releasebench-build).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${RELBENCH_ARTIFACTS:-/tmp/rempart-releasebench-build}"
command -v softhsm2-util >/dev/null || { echo "release-load.sh: softhsm2 is not installed: run scripts/setup.sh" >&2; exit 1; }
command -v openssl >/dev/null || { echo "release-load.sh: openssl is not installed: run scripts/setup.sh" >&2; exit 1; }

echo "release-load.sh: building into $out" >&2
dotnet build -c Release "$root/src/Rempart.Guardian/Rempart.Guardian.csproj" --artifacts-path "$out" -v q -nologo >&2
dotnet build -c Release "$root/bench/Rempart.ReleaseBench/Rempart.ReleaseBench.csproj" --artifacts-path "$out" -v q -nologo >&2

cd "$root"
exec dotnet "$out/bin/Rempart.ReleaseBench/release/rempart-releasebench.dll" \
  --guardian-dll "$out/bin/Rempart.Guardian/release/rempart-guardian.dll" --providers both "$@"

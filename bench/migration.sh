#!/usr/bin/env bash
# Live migration throughput, total time and downtime (issue 7 §3): one test guest booted once and
# migrated back and forth between two QEMUs on this machine, alternating plain QEMU migration over
# TCP and the agent's encrypted relay (AES-256-GCM records, MigrationRelay), in the same run.
# Compare the ratios, not the absolute numbers (these machines are shared and noisy).
# Options go to the program: --rounds 3 --memory 1024 [--modes plain,relay,tls,tls-mfd,plain-mfd --channels 2]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
artifacts="${MIGBENCH_ARTIFACTS:-/tmp/rempart-migrationbench-build}"

bash "$here/scripts/build-test-guest.sh" >/dev/null
echo "== build (Release, $artifacts)"
dotnet build -c Release "$here/bench/Rempart.MigrationBench" --artifacts-path "$artifacts" -v quiet -nologo >"$artifacts.log" 2>&1 \
  || { cat "$artifacts.log"; exit 1; }
echo "== uptime: $(uptime)"
echo "== $(qemu-system-x86_64 --version | head -1); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
if [ "${1:-}" = --relay-only ]; then
  dotnet "$artifacts/bin/Rempart.MigrationBench/release/rempart-migrationbench.dll" "$@"
else
  dotnet "$artifacts/bin/Rempart.MigrationBench/release/rempart-migrationbench.dll" --guests "$here/artifacts/test-guest" "$@"
fi
echo "== uptime: $(uptime)"

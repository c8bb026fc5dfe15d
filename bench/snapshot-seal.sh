#!/usr/bin/env bash
# Throughput of the sealed snapshot stream (issue 7 §3): seal, verify, open and restore of the same
# file, next to a plain copy of the same bytes and to `openssl speed -evp aes-256-gcm` on one core,
# all measured in the same run with the rounds interleaved (these machines are shared and noisy:
# compare the ratios, not the absolute numbers). Options go to the program:
#   --size-mib 1024 --rounds 5 --chunk 1048576 --openssl-seconds 3 --dir /dev/shm
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
artifacts="${SNAPBENCH_ARTIFACTS:-/tmp/rempart-snapshotbench-build}"

echo "== build (Release, $artifacts)"
dotnet build -c Release "$here/bench/Rempart.SnapshotBench" --artifacts-path "$artifacts" -v quiet -nologo >"$artifacts.log" 2>&1 \
  || { cat "$artifacts.log"; exit 1; }
echo "== uptime: $(uptime)"
echo "== $(openssl version); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
dotnet "$artifacts/bin/Rempart.SnapshotBench/release/rempart-snapshotbench.dll" "$@"
echo "== uptime: $(uptime)"

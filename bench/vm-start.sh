#!/usr/bin/env bash
# Issue 6 §6: the time from `vm start` to the guest's init, shielded (through the host agent: release,
# key recovery in the host TPM, swtpm, NVRAM decryption, QEMU, LUKS disks over QMP) vs the same
# guest launched plain by QEMU (raw disks, a copy of the OVMF variable template, plain swtpm), with
# the breakdown and the ratio measured in the same run; and the sequential write and read the
# guest sees on an encrypted (LUKS qcow2) data disk vs plain qcow2 and raw. Needs root, QEMU,
# swtpm, OVMF and the rempart-vm user (scripts/setup.sh); runs under TCG here (docs/qemu.md).
# Usage: bench/vm-start.sh [--rounds 3] [--disk-rounds 1] [--disk-mib 256] [--memory 512] [--cpus 1]
#                          [--no-start] [--no-disk]          (bench/README.md, "VM start and guest disk throughput")
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
artifacts="${VMBENCH_ARTIFACTS:-/tmp/rempart-vmbench-build}"
export REMPART_FIXTURES="${REMPART_FIXTURES:-$(cd "$here/.." && pwd)/shared/fixtures/eventlogs}"

echo "== $(date -u +%FT%TZ) uptime:$(uptime)"
bash "$here/scripts/build-test-guest.sh"
# A private copy of the guest: a concurrent rebuild of artifacts/test-guest must not change it mid-run.
guests="$(mktemp -d /tmp/rempart-vmbench-guest.XXXXXX)"
trap 'rm -rf "$guests"' EXIT
cp "$here/artifacts/test-guest/"{guest.img,marker.img,marker.txt} "$guests/"
dotnet build "$here/bench/Rempart.VmBench/Rempart.VmBench.csproj" -c Release --artifacts-path "$artifacts" -v q -nologo >/dev/null
"$artifacts/bin/Rempart.VmBench/release/rempart-vmbench" --guests "$guests" "$@"
echo "== $(date -u +%FT%TZ) uptime:$(uptime)"

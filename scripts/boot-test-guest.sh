#!/usr/bin/env bash
# Boots the test guest (scripts/build-test-guest.sh, built first if needed) under enforced Secure
# Boot: OVMF with Debian's snakeoil keys enrolled, a fresh swtpm TPM 2.0 behind a CRB interface,
# the guest disk and the marker disk read-only, software emulation (TCG) by default.
#
# stdout is the guest's serial console (carriage returns and terminal escapes removed); this
# script's own messages go to stderr. Exit status:
#   0  the guest printed "REMPART-GUEST: done"
#   2  the firmware refused to boot the image (Secure Boot), or found nothing to boot
#   3  timed out
#   1  anything else (missing tools, swtpm or QEMU failed, the guest died before "done")
#
# Usage: boot-test-guest.sh [guest.img|guest-unsigned.img|PATH] [--banks sha256|sha1,sha256]
#          [--marker PATH] [--timeout SECONDS] [--start-timeout SECONDS] [--log PATH]
#          [--accel tcg|kvm]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
guests="${REMPART_TEST_GUEST_DIR:-$here/artifacts/test-guest}"
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd

image=guest.img
banks=sha256
marker=""
timeout=180          # the whole boot
start_timeout=90     # until the guest's first REMPART-GUEST: line
log=""
accel=tcg

die() { echo "boot-test-guest: $*" >&2; exit 1; }
note() { echo "boot-test-guest: $*" >&2; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

while (($#)); do
  case "$1" in
    --banks) banks="${2:?--banks needs a value}"; shift ;;
    --marker) marker="${2:?--marker needs a path}"; shift ;;
    --timeout) timeout="${2:?--timeout needs seconds}"; shift ;;
    --start-timeout) start_timeout="${2:?--start-timeout needs seconds}"; shift ;;
    --log) log="${2:?--log needs a path}"; shift ;;
    --accel) accel="${2:?--accel needs tcg or kvm}"; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option '$1'" ;;
    *) image="$1" ;;
  esac
  shift
done
[[ "$banks" =~ ^(sha1|sha256|sha384|sha512)(,(sha1|sha256|sha384|sha512))*$ ]] || die "--banks: '$banks' is not a list of sha1, sha256, sha384, sha512"
[[ "$timeout" =~ ^[0-9]+$ && "$start_timeout" =~ ^[0-9]+$ ]] || die "timeouts are whole seconds"
[[ "$accel" == tcg || "$accel" == kvm ]] || die "--accel: tcg or kvm"

missing=()
for c in swtpm:swtpm swtpm_setup:swtpm-tools qemu-system-x86_64:qemu-system-x86; do
  command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c%%:*} (package ${c#*:})")
done
for f in "$ovmf_code" "$ovmf_vars"; do [[ -r "$f" ]] || missing+=("$f (package ovmf)"); done
if ((${#missing[@]})); then
  printf 'boot-test-guest: missing %s\n' "${missing[@]}" >&2
  die "install them (scripts/setup.sh installs all of them)"
fi

# A bare name means the built guest; build it (quiet when it is current).
if [[ "$image" != */* ]]; then
  bash "$here/scripts/build-test-guest.sh" >&2 || die "building the test guest failed"
  image="$guests/$image"
fi
[[ -n "$marker" ]] || marker="$guests/marker.img"
[[ -r "$image" ]] || die "no guest image at $image"
[[ -r "$marker" ]] || die "no marker disk at $marker"

work="$(mktemp -d "${TMPDIR:-/tmp}/rempart-boot.XXXXXX")"
swtpm_pid=""; qemu_pid=""; tail_pid=""
stop() { # pid: TERM, then KILL after 5 s
  local pid="$1"
  [[ -n "$pid" ]] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local status=$?
  stop "$qemu_pid"; stop "$swtpm_pid"
  # The console stream ends by itself once QEMU is gone; give it a moment to flush.
  if [[ -n "$tail_pid" ]]; then
    for _ in $(seq 1 20); do kill -0 "$tail_pid" 2>/dev/null || break; sleep 0.1; done
    stop "$tail_pid"
  fi
  [[ -n "$log" && -f "$work/serial.log" ]] && cp "$work/serial.log" "$log"
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A freshly manufactured TPM with the requested PCR banks.
mkdir -p "$work/tpm"
swtpm_setup --tpm2 --tpmstate "$work/tpm" --pcr-banks "$banks" --overwrite >"$work/swtpm_setup.log" 2>&1 \
  || { cat "$work/swtpm_setup.log" >&2; die "swtpm_setup failed"; }
# No --flags startup-clear: the firmware sends TPM2_Startup itself, as on real hardware.
swtpm socket --tpm2 --tpmstate dir="$work/tpm" --ctrl type=unixio,path="$work/swtpm.sock" \
  --terminate --log file="$work/swtpm.log" &
swtpm_pid=$!
for _ in $(seq 1 50); do [[ -S "$work/swtpm.sock" ]] && break; sleep 0.1; done
[[ -S "$work/swtpm.sock" ]] || { cat "$work/swtpm.log" >&2 2>/dev/null; die "swtpm did not open its control socket"; }

cp "$ovmf_vars" "$work/vars.fd"
: >"$work/serial.log"
# OVMF_CODE_4M.snakeoil.fd is the secboot build: it needs SMM and a secure flash.
qemu=(qemu-system-x86_64 -accel "$accel" -machine "q35,smm=on" -global "driver=cfi.pflash01,property=secure,value=on"
  -m 512 -nodefaults -no-user-config -display none -serial "file:$work/serial.log"
  -drive "if=pflash,format=raw,unit=0,readonly=on,file=$ovmf_code"
  -drive "if=pflash,format=raw,unit=1,file=$work/vars.fd"
  -chardev "socket,id=chrtpm,path=$work/swtpm.sock" -tpmdev "emulator,id=tpm0,chardev=chrtpm"
  -device "tpm-crb,tpmdev=tpm0"
  -drive "file=$image,if=virtio,format=raw,readonly=on"
  -drive "file=$marker,if=virtio,format=raw,readonly=on"
  -nic none -no-reboot)
started=$SECONDS
note "booting $(basename "$image") (banks $banks, $accel, timeout ${timeout} s)"
"${qemu[@]}" </dev/null >"$work/qemu.log" 2>&1 &
qemu_pid=$!

tail -n +1 -s 0.2 -F --pid="$qemu_pid" "$work/serial.log" 2>/dev/null \
  | tr -d '\r' | sed -u 's/\x1b\[[0-9;=?]*[A-Za-z]//g' &
tail_pid=$!

has() { grep -aq -- "$1" "$work/serial.log"; }
result=""
while :; do
  sleep 0.5
  elapsed=$((SECONDS - started))
  if has 'REMPART-GUEST: done'; then result=reported; break; fi
  if ! has 'REMPART-GUEST:'; then
    if has 'Access Denied\|Security Violation'; then result=refused; break; fi
    if has 'No bootable option or device was found'; then result=nothing; break; fi
  fi
  if ! kill -0 "$qemu_pid" 2>/dev/null; then result=exited; break; fi
  if ((elapsed >= timeout)); then result=timeout; break; fi
  if ((elapsed >= start_timeout)) && ! has 'REMPART-GUEST:'; then result=nostart; break; fi
done

# After "done" the guest powers off by itself; wait for that a little, then stop everything.
if [[ "$result" == reported ]]; then
  for _ in $(seq 1 50); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
fi
stop "$qemu_pid"; qemu_pid=""
elapsed=$((SECONDS - started))
name="$(basename "$image")"
case "$result" in
  reported) note "$name booted and reported in ${elapsed} s"; exit 0 ;;
  refused)
    why="$(tr -d '\r' <"$work/serial.log" | grep -aom1 'Access Denied\|Security Violation')"
    note "the firmware refused to boot $name ($why: not signed by a key in db) after ${elapsed} s; no REMPART-GUEST: lines"
    exit 2 ;;
  nothing) note "the firmware found nothing to boot on $name after ${elapsed} s"; exit 2 ;;
  nostart) note "no REMPART-GUEST: line from $name within ${start_timeout} s"; exit 3 ;;
  timeout) note "$name did not print REMPART-GUEST: done within ${timeout} s"; exit 3 ;;
  exited)
    sed 's/^/qemu: /' "$work/qemu.log" >&2
    note "QEMU exited after ${elapsed} s before the guest printed REMPART-GUEST: done"
    exit 1 ;;
esac

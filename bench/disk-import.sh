#!/usr/bin/env bash
# Where the time of `vm create`'s disk import goes: qemu-img convert into a qcow2 with LUKS
# (AES-256-XTS) next to `openssl speed -evp aes-256-xts`, measured in the same run, with the
# variants that isolate each cost (LUKS creation, PBKDF2 time, cipher, qcow2 vs raw LUKS, cache
# mode, parallel writes). These machines are shared and loaded: the CPU-time rate (bytes per
# second of user+sys time) is the comparable figure, not the wall-clock one.
# Usage: bench/disk-import.sh [SIZE_MIB=512] [WORKDIR=/var/tmp]   (docs/vm-bundle.md, "Import throughput")
set -euo pipefail
size_mib="${1:-512}"
work="$(mktemp -d "${2:-/var/tmp}/rempart-disk-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
umask 077
head -c 32 /dev/urandom | base64 -w0 >pass        # a passphrase like the bundle's (base64 of 32 bytes)
echo "== source: ${size_mib} MiB of random data (no zero clusters to skip) in $work"
dd if=/dev/urandom of=src.raw bs=1M count="$size_mib" status=none
cat src.raw >/dev/null

luks="encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=aes-256,encrypt.cipher-mode=xts,encrypt.ivgen-alg=plain64,encrypt.hash-alg=sha256"
secret=(--object secret,id=sec0,file=/dev/stdin,format=raw)

printf '%-44s %9s %9s %9s %11s\n' case wall_s user_s sys_s MiB/cpu-s
row() { # name command...: runs with the passphrase on stdin, prints times
  local name="$1"; shift
  rm -f out.img
  /usr/bin/time -f '%e %U %S' -o t "$@" <pass >/dev/null 2>err || { echo "$name: FAILED: $(cat err)"; return; }
  read -r e u s <t
  last_cpu=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
  awk -v n="$name" -v e="$e" -v u="$u" -v s="$s" -v m="$size_mib" \
    'BEGIN { c = u + s; printf "%-44s %9.2f %9.2f %9.2f %11.0f\n", n, e, u, s, (c > 0 ? m / c : 0) }'
}
ossl() { openssl speed -seconds 3 -bytes "$1" -evp aes-256-xts 2>/dev/null | awk '/^AES-256-XTS/ { sub(/k$/, "", $2); printf "%.0f", $2 * 1000 / 1048576 }'; }

o512=$(ossl 512); o16k=$(ossl 16384)
echo "openssl speed -evp aes-256-xts (CPU time): ${o512} MiB/s on 512-byte blocks, ${o16k} MiB/s on 16 KiB"
row "copy (cp, the I/O path alone)" cp src.raw out.img
row "qcow2, no encryption" qemu-img convert -f raw -O qcow2 src.raw out.img
row "create only: empty 64M LUKS qcow2, iter 2000" qemu-img create -q "${secret[@]}" -f qcow2 -o "$luks" out.img 64M
row "create only: empty 64M LUKS qcow2, iter 10" qemu-img create -q "${secret[@]}" -f qcow2 -o "$luks,encrypt.iter-time=10" out.img 64M
create_cpu=$last_cpu
row "LUKS qcow2, defaults (iter 2000)" qemu-img convert "${secret[@]}" -f raw -O qcow2 -o "$luks" src.raw out.img
row "LUKS qcow2, iter 10" qemu-img convert "${secret[@]}" -f raw -O qcow2 -o "$luks,encrypt.iter-time=10" src.raw out.img
row "LUKS qcow2, iter 10, -W -m 8" qemu-img convert -W -m 8 "${secret[@]}" -f raw -O qcow2 -o "$luks,encrypt.iter-time=10" src.raw out.img
row "LUKS qcow2, iter 10, -W -m 8 -t none (Rempart)" qemu-img convert -W -m 8 -t none "${secret[@]}" -f raw -O qcow2 -o "$luks,encrypt.iter-time=10" src.raw out.img
import_cpu=$last_cpu
row "LUKS qcow2, iter 10, cluster 2M" qemu-img convert -W -m 8 "${secret[@]}" -f raw -O qcow2 -o "$luks,encrypt.iter-time=10,cluster_size=2M" src.raw out.img
row "LUKS qcow2, iter 10, aes-128-xts" qemu-img convert -W -m 8 "${secret[@]}" -f raw -O qcow2 -o "${luks/aes-256/aes-128},encrypt.iter-time=10" src.raw out.img
row "raw LUKS (-O luks), iter 10" qemu-img convert -W -m 8 "${secret[@]}" -f raw -O luks -o "key-secret=sec0,cipher-alg=aes-256,cipher-mode=xts,iter-time=10" src.raw out.img
qemu-img convert -W -m 8 "${secret[@]}" -f raw -O qcow2 -o "$luks,encrypt.iter-time=10" src.raw enc.qcow2 <pass
row "open + read back all (decrypt), iter 10" qemu-img convert "${secret[@]}" --image-opts "driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=sec0" -O raw out.img
qemu-img create -q "${secret[@]}" -f qcow2 -o "$luks" slow.qcow2 64M <pass
row "open only (qemu-img check), iter 2000" qemu-img check -q "${secret[@]}" --image-opts "driver=qcow2,file.filename=slow.qcow2,encrypt.key-secret=sec0"
row "open only (qemu-img check), iter 10" qemu-img check -q "${secret[@]}" --image-opts "driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=sec0"
# The import is a fixed cost (LUKS creation: QEMU calibrates PBKDF2 twice, >= 0.5 s of thread CPU each,
# whatever iter-time says) plus a cost per byte; the "2-6 % of OpenSSL" of issue 6 mixes the two.
awk -v m="$size_mib" -v i="$import_cpu" -v c="$create_cpu" -v o="$o512" 'BEGIN {
  if (i > c) printf "per byte (Rempart import CPU - creation CPU): %.0f MiB/CPU-s = %.1f%% of openssl 512-byte; creation %.2f CPU-s = %.0f%% of this import\n", m / (i - c), 100 * m / (i - c) / o, c, 100 * c / i }'
echo "openssl speed -evp aes-256-xts (again): $(ossl 512) MiB/s on 512-byte blocks, $(ossl 16384) MiB/s on 16 KiB"

if command -v perf >/dev/null 2>&1; then
  echo "== where the CPU goes (perf, LUKS qcow2 import as Rempart runs it: iter 10, -W -m 8 -t none)"
  rm -f out.img
  perf record -q -o perf.data -- qemu-img convert -W -m 8 -t none "${secret[@]}" -f raw -O qcow2 -o "$luks,encrypt.iter-time=10" src.raw out.img <pass >/dev/null 2>&1 || true
  perf report -i perf.data --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -12 || true
fi
echo "libraries: $(ldd "$(command -v qemu-img)" | grep -oE 'lib(gnutls|nettle|gcrypt)[^ ]*' | tr '\n' ' ')"
echo "qemu-img: $(qemu-img --version | head -1); $(openssl version); $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"

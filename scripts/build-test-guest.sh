#!/usr/bin/env bash
# Builds the test guest every VM test boots, from Debian packages only: Debian's cloud kernel and
# busybox-static in an initramfs whose /init reports Secure Boot state, the TPM, its event log,
# PCRs and a marker from a second disk on the serial console (format: docs/test-guest.md); both in
# a unified kernel image (systemd-boot-efi's stub) signed with OVMF's snakeoil key, as
# \EFI\BOOT\BOOTX64.EFI on the FAT ESP of a GPT disk.
#
# Output (artifacts/test-guest/): guest.img (signed UKI), guest-unsigned.img (same, unsigned),
# marker.img + marker.txt, the UKIs, the initramfs and inputs.txt. Skips the build when the inputs
# (package versions, this script, the stub, the OVMF key and certificate) are unchanged; quiet
# then. Usage: build-test-guest.sh [--force]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
self="$here/scripts/$(basename "$0")"
out="${REMPART_TEST_GUEST_DIR:-$here/artifacts/test-guest}"
debs="${REMPART_DEB_CACHE:-$here/artifacts/cache/debs}"

stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
ovmf_key=/usr/share/ovmf/PkKek-1-snakeoil.key
ovmf_cert=/usr/share/ovmf/PkKek-1-snakeoil.pem
ovmf_pass=snakeoil                  # published with the key (ovmf's README.Debian)
kernel_meta=linux-image-cloud-amd64
# What the guest needs from the kernel. Those built in are skipped; modules go into the initramfs
# with their dependencies (modules.dep) and /init loads them. In Debian 12's cloud kernel the TPM
# core (tpm), tpm_crb and the 8250 serial console are built in; virtio, virtio_pci, virtio_blk,
# efivarfs, fat/vfat and the NLS tables are modules (inputs.txt lists both).
modules=(tpm tpm_crb virtio_pci virtio_blk efivarfs vfat nls_cp437 nls_ascii)
disk_mib=64                         # guest.img: GPT, one ESP from 1 MiB to the last MiB
epoch=0                             # timestamps inside the images
force=0

die() { echo "build-test-guest: $*" >&2; exit 1; }
say() { echo "build-test-guest: $*"; }

for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$self"; exit 0 ;;
    *) die "unknown argument '$arg' (usage: build-test-guest.sh [--force])" ;;
  esac
done

# --- What is missing, all at once -------------------------------------------------------------
missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (package $2)"); }
need_file() { [[ -r "$1" ]] || missing+=("$1 (package $2)"); }
need_cmd apt-get apt; need_cmd apt-cache apt; need_cmd dpkg-deb dpkg
need_cmd objcopy binutils; need_cmd objdump binutils
need_cmd sbsign sbsigntool; need_cmd sbverify sbsigntool
need_cmd mkfs.vfat dosfstools; need_cmd mcopy mtools; need_cmd mmd mtools
need_cmd sfdisk fdisk; need_cmd depmod kmod; need_cmd cpio cpio; need_cmd gzip gzip
need_cmd openssl openssl; need_cmd flock util-linux; need_cmd sha256sum coreutils
need_file "$stub" systemd-boot-efi
need_file "$ovmf_key" ovmf; need_file "$ovmf_cert" ovmf
if ((${#missing[@]})); then
  printf 'build-test-guest: missing %s\n' "${missing[@]}" >&2
  die "install them (scripts/setup.sh installs all of them)"
fi

# --- Inputs and their hash ----------------------------------------------------------------------
# One apt-cache call (it takes most of the time of a run with nothing to do).
candidates="$(apt-cache policy "$kernel_meta" busybox-static 2>/dev/null \
  | awk '/^[^ ]/ { sub(":$", "", $1); p = $1 } $1 == "Candidate:" && $2 != "(none)" { print p, $2 }')"
candidate() { awk -v p="$1" '$1 == p { print $2 }' <<<"$candidates"; }
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }
kernel_meta_version="$(candidate "$kernel_meta")"
busybox_version="$(candidate busybox-static)"
[[ -n "$kernel_meta_version" ]] || die "apt knows no candidate for $kernel_meta (run apt-get update)"
[[ -n "$busybox_version" ]] || die "apt knows no candidate for busybox-static (run apt-get update)"

inputs="$(
  echo "package $kernel_meta $kernel_meta_version"
  echo "package busybox-static $busybox_version"
  for p in systemd-boot-efi ovmf sbsigntool binutils dosfstools mtools fdisk kmod cpio; do
    echo "tool $p $(pkg_version "$p")"
  done
  echo "file $(sha256sum "$self" | cut -d' ' -f1) scripts/$(basename "$self")"
  echo "file $(sha256sum "$stub" | cut -d' ' -f1) $stub"
  echo "file $(sha256sum "$ovmf_key" | cut -d' ' -f1) $ovmf_key"
  echo "file $(sha256sum "$ovmf_cert" | cut -d' ' -f1) $ovmf_cert"
)"
inputs_hash="$(sha256sum <<<"$inputs" | cut -d' ' -f1)"

products=(guest.img guest-unsigned.img marker.img marker.txt uki.efi uki-unsigned.efi initrd.img)
up_to_date() {
  [[ $force -eq 0 && -f "$out/stamp" && "$(cat "$out/stamp")" == "$inputs_hash" ]] || return 1
  local f
  for f in "${products[@]}"; do [[ -s "$out/$f" ]] || return 1; done
}

up_to_date && exit 0
mkdir -p "$out" "$debs"
# One build at a time; a second caller waits, then finds the build done.
exec 9>"$out/.lock"
flock 9
up_to_date && exit 0

started=$SECONDS
work="$(mktemp -d "${TMPDIR:-/tmp}/rempart-test-guest.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# --- Debian packages (downloaded into the cache, never installed) -------------------------------
fetch() { # name version -> path of the .deb in the cache
  local name="$1" version="$2" file
  file="$debs/${name}_${version//:/%3a}_amd64.deb"
  if [[ ! -s "$file" ]]; then
    say "downloading $name $version" >&2
    (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$name=$version" >"$work/apt.log" 2>&1) \
      || { cat "$work/apt.log" >&2; die "apt-get download $name=$version failed"; }
    mv "$work/$(basename "$file")" "$file" 2>/dev/null || mv "$work/${name}_"*.deb "$file"
  fi
  echo "$file"
}

meta_deb="$(fetch "$kernel_meta" "$kernel_meta_version")"
# The metapackage depends on exactly one versioned image package: linux-image-X (= V).
dep="$(dpkg-deb -f "$meta_deb" Depends | tr ',' '\n' | grep -m1 '^ *linux-image-' || true)"
image_pkg="$(sed -E 's/^ *([^ ]+).*/\1/' <<<"$dep")"
image_version="$(sed -nE 's/.*\(= *([^)]+)\).*/\1/p' <<<"$dep")"
[[ -n "$image_pkg" && -n "$image_version" ]] || die "cannot read the kernel package from $kernel_meta's Depends ('$dep')"
image_deb="$(fetch "$image_pkg" "$image_version")"
busybox_deb="$(fetch busybox-static "$busybox_version")"

say "extracting $image_pkg $image_version and busybox-static $busybox_version"
dpkg-deb -x "$image_deb" "$work/kernel"
dpkg-deb -x "$busybox_deb" "$work/busybox"
kver="$(ls "$work/kernel/lib/modules")"
[[ -n "$kver" && $(wc -w <<<"$kver") -eq 1 ]] || die "expected one kernel in $image_pkg, found '$kver'"
vmlinuz="$work/kernel/boot/vmlinuz-$kver"
config="$work/kernel/boot/config-$kver"
[[ -s "$vmlinuz" && -s "$config" ]] || die "$image_pkg has no /boot/vmlinuz-$kver or /boot/config-$kver"
[[ -x "$work/busybox/bin/busybox" ]] || die "busybox-static has no /bin/busybox"

# Options the guest cannot do without: built in (y) or a module (m) we load from /init.
for opt in VIRTIO_PCI VIRTIO_BLK TCG_TPM TCG_CRB SECURITYFS EFIVAR_FS VFAT_FS SERIAL_8250_CONSOLE \
           DEVTMPFS BLK_DEV_INITRD RD_GZIP EFI_STUB EFI_PARTITION; do
  grep -Eq "^CONFIG_$opt=(y|m)$" "$config" || die "$image_pkg lacks CONFIG_$opt"
done
grep -q '^CONFIG_SERIAL_8250_CONSOLE=y$' "$config" || die "the serial console is not built into $image_pkg"

# --- Initramfs: busybox, modules in load order, /init ------------------------------------------
root="$work/initramfs"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,esp,lib/modules}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"

depmod -b "$work/kernel" "$kver"
moddir="$work/kernel/lib/modules/$kver"
declare -A loaded=()
order=(); builtin=()
add_module() { # relative path from modules.dep, dependencies first
  local rel="$1" line d
  [[ -n "${loaded[$rel]:-}" ]] && return 0
  loaded[$rel]=1
  line="$(grep -m1 "^$rel:" "$moddir/modules.dep")" || die "$rel is not in modules.dep"
  for d in ${line#*:}; do add_module "$d"; done
  order+=("$rel")
}
for m in "${modules[@]}"; do
  rel="$(grep -m1 -E "(^|/)${m//_/[_-]}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | cut -d: -f1 || true)"
  if [[ -z "$rel" ]]; then
    grep -Eq "(^|/)${m//_/[_-]}\.ko$" "$moddir/modules.builtin" || die "module $m is neither built in nor in $image_pkg"
    builtin+=("$m")
    continue
  fi
  add_module "$rel"
done
: >"$root/lib/modules/load-order"
for rel in "${order[@]}"; do
  [[ "$rel" == *.ko ]] || die "$rel is compressed; busybox insmod needs plain .ko files"
  cp "$moddir/$rel" "$root/lib/modules/"
  basename "$rel" >>"$root/lib/modules/load-order"
done

cat >"$root/init" <<'INIT'
#!/bin/sh
# Rempart test guest: reports what it finds on the serial console as "REMPART-GUEST: ..." lines
# (docs/test-guest.md), then powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo 1 >/proc/sys/kernel/printk          # keep kernel messages out of the report
mount -t securityfs securityfs /sys/kernel/security

# Every report line goes to the console and to /tmp/report; the report is written to the marker
# disk too (at 4 KiB), so a shielded VM, which has no console, still reports to its tenant.
say() { echo "REMPART-GUEST: $*"; echo "REMPART-GUEST: $*" >>/tmp/report; }
say begin
say kernel "$(uname -r)"

for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m" || say "error module $m"
done
[ -d /sys/firmware/efi/efivars ] && mount -t efivarfs efivarfs /sys/firmware/efi/efivars

efivar() { # name-guid -> the variable's last byte (its data; the first 4 are attributes)
  f="/sys/firmware/efi/efivars/$1"
  [ -r "$f" ] || return 0
  set -- $(od -An -tu1 <"$f")
  [ $# -ge 5 ] && eval echo "\${$#}"
}
gv=8be4df61-93ca-11d2-aa0d-00e098032b8c
sb="$(efivar SecureBoot-$gv)"
if [ -z "$sb" ]; then
  if dmesg | grep -q 'Secure boot enabled'; then sb=1
  elif dmesg | grep -q 'Secure boot disabled'; then sb=0
  else sb=unknown; fi
fi
say "secureboot=$sb"
sm="$(efivar SetupMode-$gv)"
say "setupmode=${sm:-unknown}"
[ -r /sys/kernel/security/lockdown ] && say lockdown "$(cat /sys/kernel/security/lockdown)"

if [ -e /dev/tpm0 ] || [ -e /sys/class/tpm/tpm0 ]; then
  say tpm=1
  [ -r /sys/class/tpm/tpm0/tpm_version_major ] && say tpm-version "$(cat /sys/class/tpm/tpm0/tpm_version_major)"
else
  say tpm=0
fi

log=/sys/kernel/security/tpm0/binary_bios_measurements
if [ -r "$log" ] && cat "$log" >/tmp/eventlog 2>/dev/null && [ -s /tmp/eventlog ]; then
  say eventlog-begin
  base64 -w 76 /tmp/eventlog | while read -r l; do say eventlog "$l"; done
  say eventlog-end
  say eventlog-size "$(wc -c </tmp/eventlog | tr -d ' ')"
  say eventlog-sha256 "$(sha256sum /tmp/eventlog | cut -d' ' -f1)"
else
  say eventlog-missing
fi

for d in /sys/class/tpm/tpm0/pcr-*; do
  [ -d "$d" ] || continue
  bank="${d##*/pcr-}"
  n=0
  while [ $n -le 23 ]; do
    [ -r "$d/$n" ] && say pcr "$bank" "$n" "$(tr 'A-F' 'a-f' <"$d/$n")"
    n=$((n + 1))
  done
done

t=0
while [ ! -b /dev/vdb ] && [ $t -lt 50 ]; do sleep 0.2; t=$((t + 1)); done

if [ -b /dev/vda1 ] && mount -t vfat -o ro /dev/vda1 /esp 2>/dev/null; then
  [ -r /esp/EFI/BOOT/BOOTX64.EFI ] && say esp-bootx64-sha256 "$(sha256sum /esp/EFI/BOOT/BOOTX64.EFI | cut -d' ' -f1)"
  umount /esp
else
  say esp-missing
fi

# The marker disk is raw: its first line is "REMPART-MARKER <text>".
line=""
[ -b /dev/vdb ] && line="$(head -c 4096 /dev/vdb | head -n 1 | tr -d '\000\r')"
case "$line" in
  "REMPART-MARKER "*) say marker "${line#REMPART-MARKER }" ;;
  *) say marker-missing ;;
esac

# A second line "REMPART-MODE stay" keeps the guest running after its report (the marker kept
# in RAM, a counter written to the disk at 512 KiB every second), for tests that need a live VM.
mode="$([ -b /dev/vdb ] && head -c 4096 /dev/vdb | head -n 2 | tail -n 1 | tr -d '\000\r')"
[ "$mode" = "REMPART-MODE stay" ] && say mode stay

# A second line "REMPART-MODE disk-bench" times a sequential write, then a sequential read, of the
# whole third disk (/dev/vdc) with O_DIRECT and 1 MiB blocks (bench/vm-start.sh): bytes and
# seconds, from /proc/uptime.
if [ "$mode" = "REMPART-MODE disk-bench" ]; then
  say mode disk-bench
  t=0
  while [ ! -b /dev/vdc ] && [ $t -lt 50 ]; do sleep 0.2; t=$((t + 1)); done
  if [ -b /dev/vdc ]; then
    mib=$(($(cat /sys/block/vdc/size) / 2048))
    secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
    t0="$(cut -d' ' -f1 /proc/uptime)"
    if dd if=/dev/zero of=/dev/vdc bs=1M count=$mib oflag=direct conv=fsync 2>/dev/null; then
      say disk-bench write $((mib * 1048576)) "$(secs "$t0" "$(cut -d' ' -f1 /proc/uptime)")"
    else
      say error disk-bench write
    fi
    t0="$(cut -d' ' -f1 /proc/uptime)"
    if dd if=/dev/vdc of=/dev/null bs=1M count=$mib iflag=direct 2>/dev/null; then
      say disk-bench read $((mib * 1048576)) "$(secs "$t0" "$(cut -d' ' -f1 /proc/uptime)")"
    else
      say error disk-bench read
    fi
  else
    say error disk-bench no /dev/vdc
  fi
fi

say done
if [ -b /dev/vdb ]; then
  printf '\000' >>/tmp/report
  dd if=/tmp/report of=/dev/vdb bs=4096 seek=1 conv=notrunc,fsync 2>/dev/null || true  # a read-only marker disk: no copy
fi
sync
if [ "$mode" = "REMPART-MODE stay" ]; then
  echo "${line#REMPART-MARKER }" >/tmp/marker-in-ram
  n=0
  while :; do
    sleep 1
    n=$((n + 1))
    echo "REMPART-GUEST: tick $n"
    printf 'REMPART-TICK %d %s\n\000' $n "$(cat /tmp/marker-in-ram)" | dd of=/dev/vdb bs=4096 seek=128 conv=notrunc,fsync 2>/dev/null
  done
fi
poweroff -f
echo o >/proc/sysrq-trigger
INIT
chmod 755 "$root/init"

find "$root" -exec touch -h -d "@$epoch" {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
  | gzip -n -9 >"$work/initrd.img"

# --- Unified kernel image -----------------------------------------------------------------------
printf 'NAME="Rempart test guest"\nID=rempart-test-guest\nVERSION_ID="%s"\nPRETTY_NAME="Rempart test guest (Debian %s %s)"\n' \
  "$kver" "$image_pkg" "$image_version" >"$work/os-release"
printf 'console=ttyS0 panic=-1' >"$work/cmdline"

# Section addresses per the systemd-stub docs: after the stub's last section, each aligned to the
# stub's SectionAlignment; .linux last.
align=$((16#$(objdump -p "$stub" | awk '$1 == "SectionAlignment" { print $2 }')))
((align > 0)) || die "cannot read SectionAlignment from $stub"
end=0
while read -r size vma; do
  e=$((16#$size + 16#$vma)); ((e > end)) && end=$e
done < <(objdump -h "$stub" | awk '$1 ~ /^[0-9]+$/ && NF == 7 { print $3, $4 }')
((end > 0)) || die "cannot read the sections of $stub"
sections=()
for pair in .osrel:"$work/os-release" .cmdline:"$work/cmdline" .initrd:"$work/initrd.img" .linux:"$vmlinuz"; do
  name="${pair%%:*}"; file="${pair#*:}"
  vma=$(((end + align - 1) / align * align))
  sections+=(--add-section "$name=$file" --change-section-vma "$name=$(printf '0x%x' "$vma")")
  end=$((vma + $(stat -Lc %s "$file")))
done
say "making the unified kernel image (kernel $kver)"
objcopy "${sections[@]}" "$stub" "$work/uki-unsigned.efi"
# objcopy stamps the PE header with the current time; put back the stub's zero so that the same
# inputs make the same image (and Authenticode hash). The PE checksum then goes to 0 ("none"),
# which firmware ignores and Authenticode excludes.
pe=$(od -An -tu4 -j60 -N4 "$work/uki-unsigned.efi" | tr -d ' ')
printf '\0\0\0\0' | dd of="$work/uki-unsigned.efi" bs=1 seek=$((pe + 8)) conv=notrunc status=none
printf '\0\0\0\0' | dd of="$work/uki-unsigned.efi" bs=1 seek=$((pe + 88)) conv=notrunc status=none

say "signing it with the OVMF snakeoil key"
(
  umask 077
  openssl rsa -in "$ovmf_key" -passin "pass:$ovmf_pass" -out "$work/snakeoil.key" 2>/dev/null
)
chmod 600 "$work/snakeoil.key"
sign_ok=1
sbsign --key "$work/snakeoil.key" --cert "$ovmf_cert" --output "$work/uki.efi" "$work/uki-unsigned.efi" \
  >"$work/sbsign.log" 2>&1 || sign_ok=0
rm -f "$work/snakeoil.key"
((sign_ok)) || { cat "$work/sbsign.log" >&2; die "sbsign failed"; }
sbverify --cert "$ovmf_cert" "$work/uki.efi" >"$work/sbverify.log" 2>&1 \
  || { cat "$work/sbverify.log" >&2; die "the signed UKI does not verify against $ovmf_cert"; }

# --- Disks --------------------------------------------------------------------------------------
make_disk() { # uki image
  local uki="$1" img="$2" esp="$work/esp.img"
  local start=2048 size=$(((disk_mib - 2) * 2048))   # sectors: 1 MiB in, 1 MiB spare at the end
  rm -f "$esp" "$img"
  mkfs.vfat -C -n REMPART-ESP -i 52454d50 --invariant "$esp" $((size / 2)) >/dev/null
  SOURCE_DATE_EPOCH=$epoch MTOOLS_SKIP_CHECK=1 mmd -i "$esp" ::/EFI ::/EFI/BOOT
  touch -d "@$epoch" "$uki"
  SOURCE_DATE_EPOCH=$epoch MTOOLS_SKIP_CHECK=1 mcopy -m -i "$esp" "$uki" ::/EFI/BOOT/BOOTX64.EFI
  truncate -s "${disk_mib}M" "$img"
  sfdisk --quiet "$img" <<EOF
label: gpt
label-id: 5245d050-4152-5400-8000-000000000001
first-lba: 2048
start=$start, size=$size, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=5245d050-4152-5400-8000-000000000002, name="EFI system partition"
EOF
  dd if="$esp" of="$img" bs=512 seek=$start conv=notrunc,sparse status=none
  rm -f "$esp"
}
say "making guest.img and guest-unsigned.img (${disk_mib} MiB, GPT, FAT ESP)"
make_disk "$work/uki.efi" "$work/guest.img"
make_disk "$work/uki-unsigned.efi" "$work/guest-unsigned.img"

marker="rempart-marker-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$marker" >"$work/marker.txt"
truncate -s 1M "$work/marker.img"
printf 'REMPART-MARKER %s\n' "$marker" | dd of="$work/marker.img" conv=notrunc status=none

{
  echo "inputs-sha256 $inputs_hash"
  echo "$inputs"
  echo "kernel $image_pkg $image_version ($kver)"
  echo "built-in ${builtin[*]}"
  echo "modules ${order[*]##*/}"
  echo "cmdline $(cat "$work/cmdline")"
  for f in uki.efi uki-unsigned.efi initrd.img guest.img guest-unsigned.img marker.img; do
    echo "sha256 $(sha256sum "$work/$f" | cut -d' ' -f1) $f"
  done
} >"$work/inputs.txt"

# Replace the outputs: the stamp goes first and comes back last, so a half-replaced folder never
# looks current.
rm -f "$out/stamp"
for f in "${products[@]}" inputs.txt; do mv -f "$work/$f" "$out/$f"; done
echo "$inputs_hash" >"$out/stamp"
say "done in $((SECONDS - started)) s: $out (marker $marker)"

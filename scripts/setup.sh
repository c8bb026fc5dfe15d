#!/usr/bin/env bash
# Installs every Debian package Rempart needs, then builds. Idempotent; quiet when there is
# nothing to do. Uses sudo when not root.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

packages=(
  swtpm swtpm-tools tpm2-tools            # TPM emulator, its CA, the reference TPM tools
  qemu-system-x86 qemu-utils ovmf         # VMs and UEFI firmware
  cryptsetup-bin                          # cross-checks the LUKS header of VM disks (tests)
  sbsigntool mtools dosfstools            # signing and building the test guest's ESP
  systemd-boot-efi binutils cpio          # unified kernel images, initramfs
  fdisk kmod                              # the test guest's GPT (sfdisk) and modules.dep (depmod)
  openssl xxd                             # used by the demo and tests
  postgresql                              # the Guardian's shared store (tests run a private cluster)
  softhsm2 opensc                         # PKCS#11 token for the Guardian's HSM path; pkcs11-tool cross-checks it
  iproute2 tshark python3                 # two hosts on one machine: network namespaces, packet captures (dumpcap), test peers
)

missing=()
for p in "${packages[@]}"; do
  [[ "$p" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # wireshark-common asks whether non-root users may capture: no (tests capture as root).
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# QEMU and swtpm run as this unprivileged system user, never as root (docs/qemu.md).
if ! getent passwd rempart-vm >/dev/null; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "setup: creating the system user rempart-vm"
  $sudo useradd --system --no-create-home --shell /usr/sbin/nologin rempart-vm
fi

command -v dotnet >/dev/null || { echo "setup: the .NET 10 SDK (dotnet) is required" >&2; exit 1; }

# Build everything once; quiet unless it fails.
log="$(mktemp)"
if ! dotnet build "$here/Rempart.slnx" -c Debug -nologo -v quiet >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "setup: build failed" >&2
  exit 1
fi
rm -f "$log"
"$here/scripts/rempart" --version >/dev/null

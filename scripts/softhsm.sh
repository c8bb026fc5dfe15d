#!/usr/bin/env bash
# A private SoftHSM2 token for tests and demos of the Guardian's pkcs11 key provider.
#
#   scripts/softhsm.sh DIR [LABEL]    (LABEL defaults to "rempart")
#
# Creates DIR/softhsm2.conf (tokens in DIR/tokens), initialises a token LABEL with random SO and
# user PINs written to DIR/LABEL.so-pin and DIR/LABEL.user-pin (0600), and prints the module path.
# Use the token with SOFTHSM2_CONF=DIR/softhsm2.conf. Idempotent: an existing token and its PIN
# files are kept. softhsm2-util only takes PINs on its command line (or from a terminal), so they
# appear there for the instant it runs: this script is for throwaway tokens, not production HSMs.
set -euo pipefail

dir="${1:?usage: softhsm.sh DIR [LABEL]}"
label="${2:-rempart}"
[[ "$label" =~ ^[A-Za-z0-9._-]{1,32}$ ]] || { echo "softhsm.sh: label '$label': 1-32 letters, digits, . _ -" >&2; exit 2; }

command -v softhsm2-util >/dev/null || { echo "softhsm.sh: softhsm2 is not installed: run scripts/setup.sh" >&2; exit 1; }
module=""
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so /usr/lib64/pkcs11/libsofthsm2.so; do
  [[ -f "$m" ]] && { module="$m"; break; }
done
[[ -n "$module" ]] || { echo "softhsm.sh: libsofthsm2.so not found: run scripts/setup.sh" >&2; exit 1; }

umask 077
mkdir -p "$dir/tokens"
dir="$(cd "$dir" && pwd)"
conf="$dir/softhsm2.conf"
if [[ ! -f "$conf" ]]; then
  cat >"$conf.tmp" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
  mv "$conf.tmp" "$conf"
fi
export SOFTHSM2_CONF="$conf"

if ! softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]+$label[[:space:]]*\$"; then
  pin() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
  so="$(pin)"; user="$(pin)"
  printf '%s\n' "$so" >"$dir/$label.so-pin.tmp" && mv "$dir/$label.so-pin.tmp" "$dir/$label.so-pin"
  printf '%s\n' "$user" >"$dir/$label.user-pin.tmp" && mv "$dir/$label.user-pin.tmp" "$dir/$label.user-pin"
  softhsm2-util --init-token --free --label "$label" --so-pin "$so" --pin "$user" >/dev/null
fi
echo "$module"

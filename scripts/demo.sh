#!/usr/bin/env bash
# The main job, on embedded defaults: manufactures a software TPM (swtpm, with an EK
# certificate from swtpm's local CA), shows its identity and PCRs, makes a quote over a
# fresh nonce, verifies it with Rempart and with tpm2-tools, and shows a tampered quote
# being refused. Everything lives in a temporary folder removed at exit.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
rempart="$here/scripts/rempart"

bash "$here/scripts/setup.sh"

work="$(mktemp -d /tmp/rempart-demo.XXXXXX)"
swtpm_pid=""
guardian_pid=""
cleanup() {
  [[ -n "$guardian_pid" ]] && kill "$guardian_pid" 2>/dev/null && wait "$guardian_pid" 2>/dev/null
  [[ -n "$swtpm_pid" ]] && kill "$swtpm_pid" 2>/dev/null && wait "$swtpm_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Manufacturing a software TPM (swtpm_setup: EKs, EK certificate, sha1+sha256 banks)"
mkdir -p "$work/tpm"
swtpm_setup --tpm2 --tpmstate "$work/tpm" --create-ek-cert --pcr-banks sha1,sha256 --overwrite >"$work/setup.log" 2>&1 \
  || { cat "$work/setup.log" >&2; exit 1; }
echo "done: state in $work/tpm"

# A free pair of loopback ports (data on PORT, control on PORT+1).
port=""
for _ in $(seq 1 50); do
  p=$((20000 + RANDOM % 40000))
  if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && ! (exec 3<>/dev/tcp/127.0.0.1/$((p + 1))) 2>/dev/null; then
    port=$p; break
  fi
done
[[ -n "$port" ]] || { echo "no free port pair" >&2; exit 1; }

swtpm socket --tpm2 --tpmstate dir="$work/tpm" \
  --server type=tcp,port="$port",bindaddr=127.0.0.1 --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
  --flags not-need-init,startup-clear >"$work/swtpm.log" 2>&1 &
swtpm_pid=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
export REMPART_TPM="swtpm:tcp:127.0.0.1:$port"
echo "swtpm listening at $REMPART_TPM"

step "rempart tpm info"
"$rempart" tpm info

step "rempart tpm ek (the EK re-created from the TCG template, checked against its certificate)"
"$rempart" tpm ek --type rsa

# A real firmware event log from a public project (an Arch Linux workstation, see
# ../shared/fixtures/eventlogs/SOURCES.md): the swtpm replays it and so plays a host that
# booted that firmware.
fixtures="${REMPART_FIXTURES:-$here/../shared/fixtures/eventlogs}"
bootlog="$fixtures/go-tpm-tools__arch-linux-workstation.bin"
if [[ -f "$bootlog" ]]; then
  step "rempart tpm replay-boot (the swtpm plays a host that booted a real firmware)"
  "$rempart" tpm replay-boot --eventlog "$bootlog"
else
  echo "(no fixture log at $bootlog: the quote will cover an unbooted TPM)"
  bootlog=""
fi

step "rempart tpm pcrs --bank sha256"
"$rempart" tpm pcrs --bank sha256

nonce="$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')"
step "rempart tpm quote (nonce $nonce)"
"$rempart" tpm quote --nonce "$nonce" --pcrs sha256:0,1,2,3,4,5,6,7+sha1:0,7 --out "$work/quote"

step "rempart quote verify (signature, magic, nonce, PCR digest)"
"$rempart" quote verify --ak "$work/quote/ak.pub" --msg "$work/quote/quote.msg" --sig "$work/quote/quote.sig" \
  --nonce "$nonce" --pcrs "$work/quote/pcrs.json"

step "tpm2_checkquote (tpm2-tools, written by others) agrees"
tpm2_checkquote -u "$work/quote/ak.pem" -m "$work/quote/quote.msg" -s "$work/quote/quote.sig" -q "$nonce" -g sha256 >/dev/null
echo "tpm2_checkquote: signature and nonce verified"

if [[ -n "$bootlog" ]]; then
  step "rempart eventlog verify (the quote plus the boot log, a verdict per PCR)"
  "$rempart" eventlog verify --log "$bootlog" --ak "$work/quote/ak.pub" --msg "$work/quote/quote.msg" \
    --sig "$work/quote/quote.sig" --nonce "$nonce" --pcrs "$work/quote/pcrs.json"
fi

step "A replayed quote (a different nonce) is refused"
other="$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')"
set +e
"$rempart" quote verify --ak "$work/quote/ak.pem" --msg "$work/quote/quote.msg" --sig "$work/quote/quote.sig" --nonce "$other"
rc=$?
set -e
[[ $rc -eq 1 ]] || { echo "expected exit code 1 for an invalid quote, got $rc" >&2; exit 1; }
echo "refused with exit code 1, as expected"

if [[ -n "$bootlog" ]]; then
  step "The Guardian: HTTPS with a self-signed certificate, SQLite, trusting swtpm's local CA for EK certificates"
  mkdir -p "$work/guardian/trusted-ek-cas"
  cp /var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem /var/lib/swtpm-localca/issuercert.pem "$work/guardian/trusted-ek-cas/"
  gport=""
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then gport=$p; break; fi
  done
  # The secret protecting the Guardian's keys at rest (a demo value; an operator supplies theirs).
  head -c 32 /dev/urandom > "$work/guardian-secret"
  "$here/scripts/rempart-guardian" serve --data "$work/guardian" --listen "127.0.0.1:$gport" \
    --secret-file "$work/guardian-secret" >"$work/guardian.log" 2>&1 &
  guardian_pid=$!
  for _ in $(seq 1 600); do
    grep -q "listening on" "$work/guardian.log" 2>/dev/null && break
    kill -0 "$guardian_pid" 2>/dev/null || { cat "$work/guardian.log" >&2; echo "the Guardian did not start" >&2; exit 1; }
    sleep 0.1
  done
  cat "$work/guardian.log"
  fingerprint="$(sed -n 's/.*fingerprint \([0-9a-f]*\).*/\1/p' "$work/guardian.log")"
  export REMPART_GUARDIAN="https://127.0.0.1:$gport" REMPART_GUARDIAN_FINGERPRINT="$fingerprint"
  export REMPART_GUARDIAN_TOKEN_FILE="$work/guardian/admin-token"

  step "rempart hostgroup create (hosts whose EK certificate swtpm's CA issued are approved into it)"
  "$rempart" hostgroup create demo --description "demo fabric" --approve-ek-issuer "CN=swtpm-localca"

  step "rempart host attest (enrolment: EK certificate chain, MakeCredential/ActivateCredential; then attestation)"
  "$rempart" host attest --state "$work/host" --hostname demo-host --eventlog "$bootlog"

  step "rempart host list"
  "$rempart" host list

  step "An extra PCR_Extend after boot: the Guardian refuses, naming the PCR"
  tpm2_pcrextend -T "swtpm:host=127.0.0.1,port=$port" 4:sha256=0000000000000000000000000000000000000000000000000000000000000000 2>/dev/null \
    || { echo "tpm2_pcrextend failed" >&2; exit 1; }
  set +e
  "$rempart" host attest --state "$work/host" --hostname demo-host --eventlog "$bootlog"
  rc=$?
  set -e
  [[ $rc -eq 1 ]] || { echo "expected the Guardian to refuse (exit 1), got $rc" >&2; exit 1; }
  echo "refused with exit code 1, as expected"
fi

printf '\n\033[1mDemo complete.\033[0m\n'

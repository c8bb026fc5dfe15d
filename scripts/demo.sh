#!/usr/bin/env bash
# The main job, on embedded defaults (issue 6 §4): a shielded VM that runs only on an attested host.
#   a Guardian (SQLite, file key provider) on loopback → a swtpm plays the host TPM, booted from a
#   real firmware log → the host agent enrols, an admin approves it, a baseline policy is captured
#   → the tenant makes an owner key and a key protector offline → the test guest becomes an
#   encrypted VM bundle → the VM starts under Secure Boot with its vTPM, no console → the verdict,
#   the key release in the audit logs, and the guest's own report read back by the tenant from its
#   encrypted disk → stop. Every process it starts is stopped at exit, the temporary folder removed.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
rempart="$here/scripts/rempart"

bash "$here/scripts/setup.sh"

work="$(mktemp -d /tmp/rempart-demo.XXXXXX)"
chmod 711 "$work" # the VM user passes through to its run folder and disks, and lists nothing
swtpm_pid="" guardian_pid="" agent_pid=""
export REMPART_AGENT_SOCKET="$work/agent/agent.sock"
cleanup() {
  if [[ -n "$agent_pid" ]]; then
    "$rempart" vm kill demo-vm >/dev/null 2>&1 || true
    kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  fi
  [[ -n "$guardian_pid" ]] && kill "$guardian_pid" 2>/dev/null && wait "$guardian_pid" 2>/dev/null
  [[ -n "$swtpm_pid" ]] && kill "$swtpm_pid" 2>/dev/null && wait "$swtpm_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "demo: $*" >&2; exit 1; }
free_port() {
  for _ in $(seq 1 50); do
    local p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && ! (exec 3<>/dev/tcp/127.0.0.1/$((p + 1))) 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  return 1
}
json_field() { sed -n "s/.*\"$1\": *\"\\{0,1\\}\\([^\",]*\\)\"\\{0,1\\}.*/\\1/p" | head -n 1; }

step "Building Rempart (CLI, Guardian, host agent) and the test guest (a Secure Boot UKI, docs/test-guest.md)"
"$rempart" --help >/dev/null
bash "$here/scripts/build-test-guest.sh"
guests="$here/artifacts/test-guest"

step "The host's TPM: a swtpm with an EK certificate from swtpm's local CA"
mkdir -p "$work/host-tpm"
swtpm_setup --tpm2 --tpmstate "$work/host-tpm" --create-ek-cert --pcr-banks sha1,sha256 --overwrite >"$work/setup.log" 2>&1 \
  || { cat "$work/setup.log" >&2; fail "swtpm_setup failed"; }
port="$(free_port)" || fail "no free port pair"
swtpm socket --tpm2 --tpmstate dir="$work/host-tpm" \
  --server type=tcp,port="$port",bindaddr=127.0.0.1 --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
  --flags not-need-init,startup-clear >"$work/swtpm.log" 2>&1 &
swtpm_pid=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
export REMPART_TPM="swtpm:tcp:127.0.0.1:$port"
"$rempart" tpm info

# A real firmware event log from a public project (an Arch Linux workstation, see
# ../shared/fixtures/eventlogs/SOURCES.md): the swtpm replays it and so plays a host that booted it.
fixtures="${REMPART_FIXTURES:-$here/../shared/fixtures/eventlogs}"
bootlog="$fixtures/go-tpm-tools__arch-linux-workstation.bin"
[[ -f "$bootlog" ]] || fail "no fixture log at $bootlog (../shared must be beside the repository)"
step "rempart tpm replay-boot: the host TPM's PCRs are those of a host that booted that firmware"
"$rempart" tpm replay-boot --eventlog "$bootlog"

step "The Guardian: HTTPS with a self-signed certificate, SQLite, file key provider, trusting swtpm's CA for EK certificates"
mkdir -p "$work/guardian/trusted-ek-cas"
cp /var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem /var/lib/swtpm-localca/issuercert.pem "$work/guardian/trusted-ek-cas/"
gport="$(free_port)" || fail "no free port"
head -c 32 /dev/urandom >"$work/guardian-secret" # protects the Guardian's keys at rest (an operator supplies theirs)
chmod 600 "$work/guardian-secret"
"$here/scripts/rempart-guardian" serve --data "$work/guardian" --listen "127.0.0.1:$gport" \
  --secret-file "$work/guardian-secret" >"$work/guardian.log" 2>&1 &
guardian_pid=$!
for _ in $(seq 1 600); do
  grep -q "listening on" "$work/guardian.log" 2>/dev/null && break
  kill -0 "$guardian_pid" 2>/dev/null || { cat "$work/guardian.log" >&2; fail "the Guardian did not start"; }
  sleep 0.1
done
cat "$work/guardian.log"
fingerprint="$(sed -n 's/.*fingerprint \([0-9a-f]*\).*/\1/p' "$work/guardian.log")"
export REMPART_GUARDIAN="https://127.0.0.1:$gport" REMPART_GUARDIAN_FINGERPRINT="$fingerprint"
export REMPART_GUARDIAN_TOKEN_FILE="$work/guardian/admin-token"

step "rempart hostgroup create prod"
"$rempart" hostgroup create prod --description "production hypervisors"

step "The host agent (rempart-host serve): enrols with its TPM, attests every 10 s, local API on a root-only socket"
"$here/scripts/rempart-host" serve --guardian "$REMPART_GUARDIAN" --guardian-fingerprint "$fingerprint" --tpm "$REMPART_TPM" \
  --data "$work/agent-data" --eventlog "$bootlog" --socket "$REMPART_AGENT_SOCKET" --run-dir "$work/run" --period 10 \
  --hostname demo-host >"$work/agent.log" 2>&1 &
agent_pid=$!
host_id=""
for _ in $(seq 1 600); do
  kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log" >&2; fail "the agent exited"; }
  host_id="$("$rempart" host status --format json 2>/dev/null | json_field hostId || true)"
  [[ -n "$host_id" && "$host_id" != "null" ]] && break
  sleep 0.5
done
[[ -n "$host_id" ]] || fail "the agent did not enrol"
"$rempart" host status || true # pending: waiting for an admin

step "rempart host approve $host_id --group prod (an admin's decision; groups can also approve by EK issuer)"
"$rempart" host approve "$host_id" --group prod
for _ in $(seq 1 120); do
  "$rempart" host status >/dev/null 2>&1 && break
  sleep 1
done
"$rempart" host status || fail "the host is not affirmed"

step "rempart policy baseline --host $host_id: a policy captured from this host's verified evidence, assigned to prod"
"$rempart" policy baseline --host "$host_id" --id prod-baseline >"$work/policy.yaml"
head -n 20 "$work/policy.yaml"
echo "  … ($(wc -l <"$work/policy.yaml") lines)"
policy_id="$("$rempart" policy create --policy "$work/policy.yaml" --format json | json_field id)"
"$rempart" policy assign --group prod --policy-id "$policy_id"

step "The tenant, offline: an owner key, the Guardian's signed metadata, a key protector for a shielded VM in group prod"
printf 'demo owner passphrase %s\n' "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" >"$work/owner-passphrase"
chmod 600 "$work/owner-passphrase"
"$rempart" owner create --out "$work/owner" --passphrase-file "$work/owner-passphrase"
"$rempart" guardian metadata --out "$work/guardian-metadata.json" | tee "$work/metadata.txt"
# The tenant pins the Guardian's signing-key fingerprint (given by its operator out of band).
key_fingerprint="$(sed -n 's/^ *fingerprint *\([0-9a-f]*\).*/\1/p' "$work/metadata.txt" | head -n 1)"
"$rempart" kp create --owner "$work/owner/owner.pub" --guardian "$work/guardian-metadata.json" \
  --guardian-fingerprint "$key_fingerprint" --shielding shielded --host-group prod --vm-id demo-vm-1 --out "$work/vm.kp"

step "rempart vm create demo-vm: the test guest imported into LUKS qcow2 disks, NVRAM and vTPM encrypted"
"$rempart" vm create demo-vm --from "$guests/guest.img" --kp "$work/vm.kp" --memory 512 --disk "marker=$guests/marker.img"
bundle="$work/agent-data/vms/demo-vm"
ls -l "$bundle" "$bundle/disks" "$bundle/vtpm"
qemu-img info "$bundle/disks/marker.qcow2" | grep -E "file format|encrypt|cipher|ivgen" || true
marker="$(cat "$guests/marker.txt")"
if grep -rqF "$marker" "$bundle"; then fail "the marker text is in clear in the bundle"; fi
echo "the guest's marker text ($marker) is nowhere in the bundle in clear"

step "rempart vm start demo-vm: fresh health token → key release → swtpm → NVRAM in memory → sandboxed QEMU as the VM's own uid"
"$rempart" vm start demo-vm
"$rempart" vm status demo-vm

step "The attestation verdict and the key release, in the Guardian's audit log"
"$rempart" host status
"$rempart" kp releases "$work/vm.kp"

step "A shielded VM has no console: rempart vm console is refused (and audited)"
set +e
"$rempart" vm console demo-vm
rc=$?
set -e
[[ $rc -eq 1 ]] || fail "expected the console to be refused (exit 1), got $rc"

step "The guest reports to its own encrypted disk, then powers off (under software emulation: about a minute)"
state=""
for _ in $(seq 1 600); do
  state="$("$rempart" vm status demo-vm --format json | json_field state)"
  [[ "$state" == "stopped" ]] && break
  sleep 1
done
[[ "$state" == "stopped" ]] || { "$rempart" vm stop demo-vm --timeout 5 || true; fail "the guest did not finish its report"; }
"$rempart" vm status demo-vm

step "The agent's audit log of this host's VMs (hash-chained)"
"$rempart" host audit

step "The tenant reads the guest's report from the encrypted disk, offline, with the owner key (no host, no Guardian)"
REMPART_OWNER_PASSPHRASE="$(head -n 1 "$work/owner-passphrase")" \
  "$rempart" kp export-disk "$work/vm.kp" --owner-key "$work/owner/owner.key" --bundle "$bundle" --disk marker --out "$work/marker.raw"
dd if="$work/marker.raw" bs=4096 skip=1 count=127 status=none | tr -d '\000' >"$work/report.txt"
grep -E '^REMPART-GUEST: ' "$work/report.txt" | grep -vE '^REMPART-GUEST: (eventlog |pcr sha(1|256) (1[2-9]|2[0-3]|8) )' || true
grep -qx 'REMPART-GUEST: secureboot=1' "$work/report.txt" || fail "the guest did not report Secure Boot on"
grep -qx 'REMPART-GUEST: tpm-version 2' "$work/report.txt" || fail "the guest has no TPM 2.0"
grep -qx "REMPART-GUEST: marker $marker" "$work/report.txt" || fail "the guest did not read the marker from its encrypted disk"

printf '\n\033[1mDemo complete:\033[0m a shielded VM ran on an attested host, under Secure Boot with its vTPM, from encrypted disks; its key was released only to that host.\n'

#!/usr/bin/env bash
# The Guardian load benchmark (bench/README.md, "Guardian attestation load"): builds the Guardian and
# the load generator (Release, into a private output: REMPART_LOADGEN_BUILD, default
# artifacts/loadgen), starts — or finds — the private PostgreSQL cluster of scripts/postgres.sh, and
# runs the load on SQLite, then on PostgreSQL. Arguments go to the load generator and win over the
# defaults here, e.g.:
#   bench/attestation-load.sh --hosts 200 --duration 20
#   bench/attestation-load.sh --store postgres --format json > result.json
# Progress goes to stderr, the report to stdout; the exit code is 1 when a run was not valid
# (a refusal, an error, or an audit chain that does not verify).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${REMPART_LOADGEN_BUILD:-$here/artifacts/loadgen}"

echo "attestation-load: building the Guardian and the load generator (Release) into $out" >&2
for proj in src/Rempart.Guardian/Rempart.Guardian.csproj bench/Rempart.LoadGen/Rempart.LoadGen.csproj; do
  log="$(mktemp)"
  if ! dotnet build "$here/$proj" -c Release --artifacts-path "$out" -nologo -v quiet >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "attestation-load: build of $proj failed" >&2
    exit 3
  fi
  rm -f "$log"
done

echo "attestation-load: PostgreSQL (scripts/postgres.sh)" >&2
postgres="$(bash "$here/scripts/postgres.sh")"

exec dotnet "$out/bin/Rempart.LoadGen/release/rempart-loadgen.dll" \
  --guardian-dll "$out/bin/Rempart.Guardian/release/rempart-guardian.dll" \
  --postgres "$postgres" --store both "$@"

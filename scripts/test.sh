#!/usr/bin/env bash
# Setup, then the whole test suite. Ends with "N passed, N failed[, N skipped]" counted from
# the test results (TRX files), and exits non-zero on any failure.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
# A private PostgreSQL cluster for the Guardian's store tests (left running for the next run).
REMPART_TEST_POSTGRES="$(bash scripts/postgres.sh)" || { echo "0 passed, 1 failed"; exit 1; }
export REMPART_TEST_POSTGRES

results="$here/artifacts/test-results"
rm -rf "$results"
mkdir -p "$results"

# One run per test project, each with its own results folder, so no TRX file can overwrite
# another's (their names only carry a timestamp to the second).
status=0
for proj in tests/*/*.Tests.csproj; do
  name="$(basename "$proj" .csproj)"
  dotnet test "$proj" -c Debug --no-build -nologo \
    --logger "trx" --logger "console;verbosity=minimal" \
    --results-directory "$results/$name" || status=1
done

passed=0; failed=0; skipped=0; files=0
for trx in "$results"/*/*.trx; do
  [[ -f "$trx" ]] || continue
  files=$((files + 1))
  counters="$(grep -o '<Counters [^>]*>' "$trx" | head -1)"
  get() { sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$counters"; }
  p=$(get passed); f=$(get failed); e=$(get error); t=$(get timeout); n=$(get notExecuted)
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0} + ${e:-0} + ${t:-0}))
  skipped=$((skipped + ${n:-0}))
done

if ((files == 0)); then
  echo "no test results were produced"
  failed=$((failed + 1))
fi
if ((status != 0 && failed == 0)); then
  # The runner failed without recording a failed test (a crash or a build problem): count it.
  failed=1
fi

line="$passed passed, $failed failed"
((skipped > 0)) && line="$line, $skipped skipped"
echo "$line"
((failed == 0))

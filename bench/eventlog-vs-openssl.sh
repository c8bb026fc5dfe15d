#!/usr/bin/env bash
# Event log replay rate next to OpenSSL's SHA-256 rate on 64-byte messages, measured in the
# same run (these machines are shared and noisy: compare the ratio, not the absolute numbers).
# One replayed event of a SHA-256 log is one SHA-256 over 64 bytes (old PCR ‖ digest).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "== openssl speed -evp sha256 -bytes 64 (before)"
before=$(openssl speed -seconds 3 -bytes 64 -evp sha256 2>/dev/null | awk '/^sha256/ {print $2}' | sed 's/k$//')

echo "== BenchmarkDotNet: EventLogBenchmarks"
dotnet run -c Release --project "$here/bench/Rempart.Bench" -- --filter '*EventLogBenchmarks*' --launchCount 1 --warmupCount 3 --iterationCount 10 \
  --exporters csv --artifacts "$out" >"$out/bdn.log" 2>&1 || { cat "$out/bdn.log"; exit 1; }
grep -E '^\| (Parse|Replay|ParseAndReplay) ' "$out/bdn.log" || true

echo "== openssl speed -evp sha256 -bytes 64 (after)"
after=$(openssl speed -seconds 3 -bytes 64 -evp sha256 2>/dev/null | awk '/^sha256/ {print $2}' | sed 's/k$//')

csv=$(find "$out" -name '*EventLogBenchmarks-report.csv' | head -1)
fixtures="${REMPART_FIXTURES:-$here/../shared/fixtures/eventlogs}"
"$here/scripts/rempart" eventlog show "$fixtures/go-tpm-tools__gdc-host.bin" --format json >"$out/log.json"
python3 - "$csv" "$before" "$after" "$out/log.json" <<'PY'
import csv, json, sys
path, before, after = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
log = json.load(open(sys.argv[4]))
openssl_kbs = (before + after) / 2            # 1000s of bytes per second, 64-byte messages
openssl_hps = openssl_kbs * 1000 / 64         # SHA-256 of 64 bytes per second
# events replay extends: not the Spec ID header, not EV_NO_ACTION, not PCR 0xFFFFFFFF
events = sum(1 for e in log["events"] if e["number"] > 0 and e["type"] != "EV_NO_ACTION" and e["pcr"] < 24)
print(f"log: {len(log['events'])} events, {events} extended (SHA-256 only)")
def ns(s):
    v, unit = s.replace(',', '').split()
    return float(v) * {'ns': 1, 'μs': 1e3, 'us': 1e3, 'ms': 1e6, 's': 1e9}[unit]
rows = {r['Method']: r for r in csv.DictReader(open(path))}
print(f"openssl sha256, 64-byte messages: {openssl_hps:,.0f}/s (mean of before {before*1000/64:,.0f} and after {after*1000/64:,.0f})")
for m in ('Parse', 'Replay', 'ParseAndReplay'):
    t = ns(rows[m]['Mean'])
    rate = events / (t / 1e9)
    print(f"{m:15s} {t/1000:9.1f} us per log  {rate:12,.0f} events/s  = {rate/openssl_hps:6.1%} of openssl")
PY

#!/usr/bin/env bash
# A/A: the same kernel spec measured twice, N pairs, two ways: one run after
# the other (`chimera run a.yaml`, then `chimera run b.yaml`), and together
# (`chimera run a.yaml b.yaml`: the two sweeps take turns on the device).
# Prints, per pair, the change of the median `chimera diff` reports and its
# the exit codes of `--fail-on regression>5%` and `>10%` (0 pass, 3
# regression, 4 inconclusive).
#
#   bench/aa.sh [PAIRS [REPEATS]]   (defaults 6 and 6; builds `chimera` first)
#
# NOISY_NEIGHBOUR=1 adds a SYNTHETIC load for the length of the bench: a
# shell loop that spins one core for 4 s, then idles 4 s, over and over (the
# kind of on/off neighbour a shared VM has), so the two designs can be
# compared under drift on demand rather than when the host happens to drift.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-6}
repeats=${2:-6}
cargo build -q -p chimera-cli
chimera=target/debug/chimera
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
body="workload: kernel
params:
  op: qmatmul
  format: q8_0
  shape: \"1,1024,1024\"
  threads: 1
repeats: $repeats
harness: {warmup_iters: 3, min_iters: 10, min_time_ms: 100}"
if [ "${NOISY_NEIGHBOUR:-0}" = 1 ]; then
  echo "(with a synthetic noisy neighbour: one core spinning 4 s on, 4 s off)"
  ( while :; do timeout 4 sh -c 'while :; do :; done' || true; sleep 4; done ) &
  neighbour=$!
  trap 'kill $neighbour 2>/dev/null; pkill -P $neighbour 2>/dev/null; rm -rf "$dir"' EXIT
fi
printf 'name: a\n%s\n' "$body" >"$dir/a.yaml"
printf 'name: b\n%s\n' "$body" >"$dir/b.yaml"

gate() { # A B -> "change verdict, exit codes at 5 % and 10 %"
  local json c5 c10
  json=$("$chimera" diff "$1" "$2" --output json)
  set +e
  "$chimera" diff "$1" "$2" --fail-on 'regression>5%' >/dev/null 2>&1
  c5=$?
  "$chimera" diff "$1" "$2" --fail-on 'regression>10%' >/dev/null 2>&1
  c10=$?
  set -e
  python3 -c 'import json,sys; r=json.loads(sys.argv[1])["rows"][0]; print("%+.1f%% %s" % (100*r["change"], r["verdict"]), end=" ")' "$json"
  echo "exit(5%)=$c5 exit(10%)=$c10"
}

echo "== one after the other"
for i in $(seq "$pairs"); do
  "$chimera" run "$dir/a.yaml" --out "$dir/s$i-a" >/dev/null 2>&1
  "$chimera" run "$dir/b.yaml" --out "$dir/s$i-b" >/dev/null 2>&1
  echo "pair $i: $(gate "$dir/s$i-a/results.json" "$dir/s$i-b/results.json")"
done
echo "== together (interleaved)"
for i in $(seq "$pairs"); do
  "$chimera" run "$dir/a.yaml" "$dir/b.yaml" --out "$dir/t$i" >/dev/null 2>&1
  echo "pair $i: $(gate "$dir/t$i/a/results.json" "$dir/t$i/b/results.json")"
done

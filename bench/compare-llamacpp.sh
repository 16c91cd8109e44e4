#!/usr/bin/env bash
# Chimera's `generate` against llama.cpp's llama-bench on the same GGUF files,
# the same thread count, the same machine, interleaved (A B A B ...) so drift
# and noise hit both alike. Prints prefill and decode tokens/s side by side
# (medians over rounds) and the ratio chimera / llama.cpp.
#
#   bench/compare-llamacpp.sh [ROUNDS] [THREADS]       # defaults: 3 rounds, 2 threads
#
# Needs: a release build of chimera (cargo build --release -p chimera-cli), and
# the llama.cpp tools (bench/llamacpp.sh builds them on first use, ~5 min).
# Files: the SmolLM2-135M Q4_1 GGUF (fetched by `chimera models fetch`) and
# Q8_0 / Q4_0 copies made from it by llama-quantize. Raw JSON goes to $OUT.
set -euo pipefail

ROUNDS=${1:-3}
THREADS=${2:-2}
P=128
N=64
HERE=$(cd "$(dirname "$0")" && pwd)
CHIMERA=${CHIMERA:-$HERE/../target/release/chimera}
OUT=${OUT:-$(mktemp -d /tmp/chimera-vs-llamacpp.XXXXXX)}
MODELS=${MODELS:-$HOME/.cache/chimera/compare-models}

[[ -x $CHIMERA ]] || { echo "build chimera first: cargo build --release -p chimera-cli" >&2; exit 2; }
"$HERE/llamacpp.sh" build >/dev/null
mkdir -p "$MODELS" "$OUT"
SRC=$("$CHIMERA" models fetch)
cp -n "$SRC" "$MODELS/"
BASE=$(basename "$SRC")
for t in Q8_0 Q4_0; do
  [[ -f $MODELS/${BASE%.Q4_1.gguf}.$t.gguf ]] ||
    "$HERE/llamacpp.sh" quantize "$MODELS/$BASE" "$MODELS/${BASE%.Q4_1.gguf}.$t.gguf" "$t" >/dev/null 2>&1
done
FILES=("$BASE" "${BASE%.Q4_1.gguf}.Q8_0.gguf" "${BASE%.Q4_1.gguf}.Q4_0.gguf")

for r in $(seq "$ROUNDS"); do
  for f in "${FILES[@]}"; do
    echo "round $r: llama-bench $f" >&2
    "$HERE/llamacpp.sh" bench "$MODELS/$f" "$THREADS" "$P" "$N" 3 >"$OUT/llama.$f.$r.json"
    echo "round $r: chimera generate $f" >&2
    cat >"$OUT/spec.yaml" <<EOF
version: 1
name: vs-llamacpp
workload: generate
params:
  model: $f
  prompt_tokens: $P
  new_tokens: $N
  threads: $THREADS
harness:
  warmup_iters: 1
  min_iters: 3
  min_time_ms: 0
  max_time_ms: 120000
EOF
    "$CHIMERA" run "$OUT/spec.yaml" --model-dir "$MODELS" --out "$OUT/chimera.$f.$r" >/dev/null 2>&1
  done
done

python3 - "$OUT" "$THREADS" "${FILES[@]}" <<'EOF'
import glob, json, statistics, sys
out, threads, files = sys.argv[1], sys.argv[2], sys.argv[3:]
med = statistics.median
print(f"threads={threads}; medians over rounds; raw data in {out}")
print(f"| file | llama.cpp prefill | chimera prefill | ratio | llama.cpp decode | chimera decode | ratio |")
print(f"|---|---|---|---|---|---|---|")
for f in files:
    lp, lt, cp, cd = [], [], [], []
    for path in sorted(glob.glob(f"{out}/llama.{f}.*.json")):
        for row in json.load(open(path)):
            (lp if row["n_prompt"] > 0 else lt).append(row["avg_ts"])
    for path in sorted(glob.glob(f"{out}/chimera.{f}.*/results.json")):
        for t in json.load(open(path))["trials"]:
            if t["state"] == "succeeded":
                cp.append(t["metrics"]["prefill_tokens_per_s"])
                cd.append(t["metrics"]["decode_tokens_per_s"])
    if not (lp and lt and cp and cd):
        print(f"| {f} | missing data |")
        continue
    a, b, c, d = med(lp), med(cp), med(lt), med(cd)
    print(f"| {f} | {a:.1f} | {b:.1f} | {b/a:.2f}x | {c:.1f} | {d:.1f} | {d/c:.2f}x |")
EOF

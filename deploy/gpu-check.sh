#!/usr/bin/env bash
# First-run check of a GPU machine with the carried binaries (no Rust needed):
# a local controller and the CUDA agent on loopback, a kernel sweep of
# matmul / qmatmul on the GPU at a decode and a prefill shape, the same
# matmuls through PyTorch's torch.matmul where python3 + torch are installed
# (with the ratio), then generate and eval on SmolLM2 on the GPU.
# Everything goes into one results folder; each sweep has a time limit
# (kernels 240 s, generate 180 s, eval 120 s), so it ends within 10 minutes.
#
#   deploy/gpu-check.sh [--bin-dir DIR] [--agent PATH] [--model-dir DIR]
#                       [--out DIR] [--device gpu:0] [--dry-run]
#
#   --bin-dir    where chimera, chimera-controller and chimera-agent are
#                (default: this script's folder if they are there, else PATH)
#   --agent      the CUDA agent, if not the one in --bin-dir
#                (deploy/build-cuda-agent.sh builds it)
#   --model-dir  holds SmolLM2-135M-Instruct.Q4_1.gguf (`chimera models fetch
#                --dir DIR` elsewhere, then carry it); without it generate and
#                eval are skipped, said so in the summary
#   --out        the results folder (default gpu-check-<UTC time>)
#   --device     the GPU that must be usable (gpu:N as NVML numbers them;
#                default gpu:0) and that torch measures; the sweeps target
#                `kind: gpu`, so on a machine with several GPUs of one model
#                a trial may run on any (its device_id is in the results)
#   --dry-run    check the arguments and binaries, print what would run, exit 0
set -euo pipefail

die() { echo "gpu-check: $*" >&2; exit 2; }
say() { echo "gpu-check: $*" >&2; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN_DIR=""
AGENT=""
MODEL_DIR=""
OUT="gpu-check-$(date -u +%Y%m%dT%H%M%SZ)"
DEVICE="gpu:0"
DRY=0
MODEL="SmolLM2-135M-Instruct.Q4_1.gguf"
need() { [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) need "$1" $#; BIN_DIR="$2"; shift 2 ;;
        --agent) need "$1" $#; AGENT="$2"; shift 2 ;;
        --model-dir) need "$1" $#; MODEL_DIR="$2"; shift 2 ;;
        --out) need "$1" $#; OUT="$2"; shift 2 ;;
        --device) need "$1" $#; DEVICE="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument \`$1\` (see --help)" ;;
    esac
done
[[ "$DEVICE" =~ ^gpu:[0-9]+$ ]] || die "--device \`$DEVICE\`: expected gpu:N (as \`chimera-agent --list-devices\` names it)"

# The binaries: --bin-dir, else next to this script, else PATH.
find_bin() {
    local name="$1"
    if [ -n "$BIN_DIR" ]; then
        [ -x "$BIN_DIR/$name" ] || die "--bin-dir $BIN_DIR has no executable $name"
        echo "$BIN_DIR/$name"
    elif [ -x "$HERE/$name" ]; then
        echo "$HERE/$name"
    elif command -v "$name" >/dev/null; then
        command -v "$name"
    else
        die "no $name: pass --bin-dir DIR (the folder the binaries were carried to)"
    fi
}
[ -z "$BIN_DIR" ] || [ -d "$BIN_DIR" ] || die "--bin-dir $BIN_DIR is not a directory"
CLI="$(find_bin chimera)"
CONTROLLER="$(find_bin chimera-controller)"
if [ -n "$AGENT" ]; then
    [ -x "$AGENT" ] || die "--agent $AGENT is not an executable file"
else
    AGENT="$(find_bin chimera-agent)"
fi
HAVE_MODEL=0
if [ -n "$MODEL_DIR" ]; then
    [ -d "$MODEL_DIR" ] || die "--model-dir $MODEL_DIR is not a directory"
    [ -f "$MODEL_DIR/$MODEL" ] && HAVE_MODEL=1
fi
TORCH="no"
if command -v python3 >/dev/null && python3 -c 'import torch' 2>/dev/null; then TORCH="yes"; fi

# The sweeps. Kernel: every matmul dtype and three qmatmul formats, one
# decoded token (1 x 4096 x 4096: bound by memory bandwidth) and a
# 512-token prefill (512 x 4096 x 4096: bound by compute), three repeats.
SHAPES=("1,4096,4096" "512,4096,4096")
DTYPES=(f32 f16 bf16)
kernel_spec() {
    cat <<YAML
version: 1
name: gpu-check-kernels
description: matmul and qmatmul on the GPU at a decode and a prefill shape
workload: kernel
params:
  shape: ["${SHAPES[0]}", "${SHAPES[1]}"]
variants:
  - op: matmul
    dtype: [${DTYPES[0]}, ${DTYPES[1]}, ${DTYPES[2]}]
  - op: qmatmul
    format: [q4_0, q8_0, q4k]
target: {kind: gpu}
repeats: 3
harness:
  warmup_iters: 3
  min_iters: 10
  min_time_ms: 200
  max_time_ms: 3000
YAML
}
generate_spec() {
    cat <<YAML
version: 1
name: gpu-check-generate
description: SmolLM2-135M decode speed per weight format on the GPU
workload: generate
params:
  model: $MODEL
  format: [f32, q8_0, q4_0, q4k]
  prompt_tokens: 128
  new_tokens: 64
target: {kind: gpu}
harness:
  warmup_iters: 1
  min_iters: 3
  min_time_ms: 0
  max_time_ms: 20000
YAML
}
eval_spec() {
    cat <<YAML
version: 1
name: gpu-check-eval
description: SmolLM2-135M divergence from the f32 reference per format on the GPU
workload: eval
params:
  model: $MODEL
  format: [f32, q8_0, q4_0, q4k]
  context: 128
  chunks: 4
target: {kind: gpu}
YAML
}

if [ "$DRY" = 1 ]; then
    echo "gpu-check (dry run): nothing is started"
    echo "binaries:"
    echo "  chimera            $CLI"
    echo "  chimera-controller $CONTROLLER"
    echo "  chimera-agent      $AGENT"
    echo "results folder: $OUT"
    echo "would run:"
    echo "  $AGENT --list-devices > $OUT/devices.tsv   (stops unless $DEVICE can run trials)"
    echo "  nvidia-smi -q > $OUT/nvidia-smi.txt"
    echo "  $CONTROLLER --listen 127.0.0.1:0 --data-dir $OUT/controller-data"
    echo "  $AGENT --controller URL --name gpu-check --state-dir $OUT/agent-state${MODEL_DIR:+ --model-dir $MODEL_DIR}"
    echo "  $CLI --controller URL sweep submit $OUT/kernels.yaml --wait   (kernel sweep: matmul ${DTYPES[*]}, qmatmul q4_0 q8_0 q4k; shapes ${SHAPES[*]}; target kind gpu)"
    echo "  $CLI --controller URL results ID -o json > $OUT/kernels.json; compare ID > $OUT/kernels-compare.txt"
    if [ "$TORCH" = yes ]; then
        echo "  python3 (torch.matmul, CUDA events) at shapes ${SHAPES[*]}, dtypes ${DTYPES[*]} > $OUT/torch.json; ratio chimera/torch > $OUT/ratio.txt"
    else
        echo "  torch.matmul peer: skipped (python3 with torch not found here)"
    fi
    if [ "$HAVE_MODEL" = 1 ]; then
        echo "  $CLI --controller URL sweep submit $OUT/generate.yaml --wait; then eval.yaml ($MODEL on the GPU)"
    else
        echo "  generate / eval: skipped ($MODEL not in --model-dir${MODEL_DIR:+ $MODEL_DIR})"
    fi
    for spec in kernels generate eval; do
        echo "$spec.yaml:"
        case "$spec" in
            kernels) kernel_spec ;;
            generate) generate_spec ;;
            eval) eval_spec ;;
        esac | sed 's/^/  | /'
    done
    exit 0
fi

# ---- The real run ----------------------------------------------------------
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu-check.log"
exec > >(tee -a "$LOG") 2>&1
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
START=$(date +%s)

note "gpu-check $(date -u +%FT%TZ) on $(hostname), results in $OUT"
command -v nvidia-smi >/dev/null && nvidia-smi -q >"$OUT/nvidia-smi.txt" 2>&1 || true
"$AGENT" --list-devices >"$OUT/devices.tsv"
DEV_LINE="$(awk -F'\t' -v d="$DEVICE" '$1 == d' "$OUT/devices.tsv")"
[ -n "$DEV_LINE" ] || { note "FAILED: the agent sees no $DEVICE (devices.tsv)"; exit 1; }
if [ -z "$(echo "$DEV_LINE" | cut -f4)" ]; then
    note "FAILED: $DEVICE can run no trials with $AGENT: $(echo "$DEV_LINE" | cut -f5-)"
    note "build the agent with deploy/build-cuda-agent.sh for this GPU's compute capability"
    exit 1
fi
note "device: $(echo "$DEV_LINE" | cut -f1,2 | tr '\t' ' ')"

"$CONTROLLER" --listen 127.0.0.1:0 --data-dir "$OUT/controller-data" >"$OUT/controller.log" 2>&1 &
PIDS+=($!)
URL=""
for _ in $(seq 1 100); do
    URL="$(sed -n 's/^chimera-controller listening on \(http:\/\/.*\)$/\1/p' "$OUT/controller.log" | head -n 1)"
    [ -n "$URL" ] && break
    sleep 0.1
done
[ -n "$URL" ] || { note "FAILED: the controller did not start (controller.log)"; exit 1; }
AGENT_ARGS=(--controller "$URL" --name gpu-check --state-dir "$OUT/agent-state")
[ -z "$MODEL_DIR" ] || AGENT_ARGS+=(--model-dir "$MODEL_DIR")
"$AGENT" "${AGENT_ARGS[@]}" >"$OUT/agent.log" 2>&1 &
PIDS+=($!)
chimera() { "$CLI" --controller "$URL" "$@"; }

# One sweep: submit, wait (bounded), results and comparison into $OUT/NAME.*
run_sweep() {
    local name="$1" limit="$2" id rc=0
    id="$(timeout "$limit" "$CLI" --controller "$URL" sweep submit "$OUT/$name.yaml" --wait)" || rc=$?
    id="$(echo "$id" | tail -n 1)"
    if [ -z "$id" ]; then
        note "$name: FAILED, refused at submit (gpu-check.log)"
        return 1
    fi
    case "$rc" in
        0) note "$name: sweep $id done" ;;
        5) note "$name: sweep $id done, some trials FAILED ($name-status.txt)" ;;
        124) note "$name: sweep $id over ${limit}s: cancelled"; chimera sweep cancel "$id" >/dev/null 2>&1 || true ;;
        *) note "$name: sweep $id: chimera exited $rc (gpu-check.log)" ;;
    esac
    chimera results "$id" -o json >"$OUT/$name.json" 2>>"$LOG" || true
    chimera compare "$id" >"$OUT/$name-compare.txt" 2>&1 || true
    chimera sweep status "$id" >"$OUT/$name-status.txt" 2>&1 || true
}

kernel_spec >"$OUT/kernels.yaml"
run_sweep kernels 240 || true
chimera agents list -o json >"$OUT/agents.json" 2>&1 || true

if [ "$TORCH" = yes ] && [ -f "$OUT/kernels.json" ]; then
    python3 - "$OUT" "$DEVICE" "${SHAPES[@]}" <<'PY' | tee -a "$SUMMARY"
import json, sys, statistics, torch
out, device, shapes = sys.argv[1], sys.argv[2], sys.argv[3:]
dev = torch.device("cuda:" + device.split(":")[1])
dtypes = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
torch.backends.cuda.matmul.allow_tf32 = False  # candle's f32 matmul is f32
peer = []
for shape in shapes:
    m, n, k = (int(x) for x in shape.split(","))
    for name, dt in dtypes.items():
        a = torch.randn(m, k, device=dev, dtype=dt)
        b = torch.randn(k, n, device=dev, dtype=dt)
        for _ in range(5):
            torch.matmul(a, b)
        torch.cuda.synchronize(dev)
        times = []
        for _ in range(30):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); torch.matmul(a, b); e.record(); e.synchronize()
            times.append(s.elapsed_time(e))
        ms = statistics.median(times)
        peer.append({"shape": shape, "dtype": name, "latency_ms_p50": ms,
                     "gflop_per_s": 2 * m * n * k / (ms * 1e-3) / 1e9})
json.dump({"torch": torch.__version__, "cuda": torch.version.cuda, "trials": peer},
          open(f"{out}/torch.json", "w"), indent=2)
ours = {}
for t in json.load(open(f"{out}/kernels.json")).get("trials", []):
    p, g = t.get("params", {}), t.get("metrics", {}).get("gflop_per_s")
    if t.get("state") == "succeeded" and p.get("op") == "matmul" and g:
        ours.setdefault((p.get("shape"), p.get("dtype", "f32")), []).append(g)
print(f"matmul GFLOP/s, chimera (candle) vs torch {torch.__version__} (median):")
print(f"{'shape':>16} {'dtype':>5} {'chimera':>10} {'torch':>10} {'ratio':>7}")
for p in peer:
    g = ours.get((p["shape"], p["dtype"]))
    if g:
        c = statistics.median(g)
        print(f"{p['shape']:>16} {p['dtype']:>5} {c:10.1f} {p['gflop_per_s']:10.1f} {c / p['gflop_per_s']:7.3f}")
    else:
        print(f"{p['shape']:>16} {p['dtype']:>5} {'-':>10} {p['gflop_per_s']:10.1f}       -")
PY
else
    note "torch.matmul peer: skipped (python3 with torch: $TORCH; kernels.json: $([ -f "$OUT/kernels.json" ] && echo yes || echo no))"
fi

if [ "$HAVE_MODEL" = 1 ]; then
    generate_spec >"$OUT/generate.yaml"
    eval_spec >"$OUT/eval.yaml"
    run_sweep generate 180 || true
    run_sweep eval 120 || true
else
    note "generate / eval: skipped ($MODEL is not in --model-dir${MODEL_DIR:+ $MODEL_DIR})"
fi
note "done in $(( $(date +%s) - START ))s"

#!/usr/bin/env bash
# Builds chimera-agent with CUDA (cargo feature `cuda`) for one GPU compute
# capability, strips it, and prints its path, size and run-time libraries.
#
#   deploy/build-cuda-agent.sh [--compute-cap 89|80|86|90] [--out DIR] [--toolkit DIR]
#
# The CUDA toolkit is, in this order: $CUDA_HOME (or $CUDA_PATH) when it has
# bin/nvcc, nvcc on PATH, or the CUDA 13.0 toolkit from NVIDIA's PyPI wheels,
# fetched once into --toolkit (default ~/.cache/chimera-cuda/toolkit-13.0).
# Compute capabilities: 8.9 RTX 40xx (e.g. RTX 4080 laptop), 8.0 A100,
# 8.6 RTX 30xx / A10, 9.0 H100 / H200. One build runs on one capability.
set -euo pipefail

die() { echo "build-cuda-agent: $*" >&2; exit 1; }
say() { echo "build-cuda-agent: $*" >&2; }

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
}

CAP=90
OUT=""
TOOLKIT="${CHIMERA_CUDA_TOOLKIT:-${HOME:-/tmp}/.cache/chimera-cuda/toolkit-13.0}"
while [ $# -gt 0 ]; do
    case "$1" in
        --compute-cap) [ $# -ge 2 ] || die "--compute-cap needs a value (89, 80, 86 or 90)"; CAP="$2"; shift 2 ;;
        --compute-cap=*) CAP="${1#*=}"; shift ;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#*=}"; shift ;;
        --toolkit) [ $# -ge 2 ] || die "--toolkit needs a directory"; TOOLKIT="$2"; shift 2 ;;
        --toolkit=*) TOOLKIT="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument \`$1\` (see --help)" ;;
    esac
done
CAP="${CAP/./}"
case "$CAP" in
    80|86|89|90) ;;
    *) die "--compute-cap \`$CAP\`: one of 80 (A100), 86 (RTX 30xx, A10), 89 (RTX 40xx), 90 (H100, H200)" ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/dist/cuda-sm$CAP}"
command -v cargo >/dev/null || die "cargo is not on PATH: install Rust (https://rustup.rs)"

# The PyPI wheels of the CUDA 13.0 toolkit (as ../shared GPU notes tested).
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85
        nvidia-curand==10.4.0.35 nvidia-cublas==13.0.2.14)

fetch_toolkit() {
    local tk="$1" tmp
    command -v python3 >/dev/null || die "no CUDA toolkit (no nvcc, no CUDA_HOME) and no python3 to fetch one"
    command -v unzip >/dev/null || die "no CUDA toolkit and no unzip to unpack the wheels"
    tmp="$(mktemp -d)"
    say "no CUDA toolkit here: fetching the CUDA 13.0 wheels from PyPI into $tk"
    (cd "$tmp" && python3 -m pip download --quiet --no-deps "${WHEELS[@]}") \
        || die "could not fetch the toolkit wheels (${WHEELS[*]}): install a CUDA toolkit or set CUDA_HOME"
    mkdir -p "$tmp/u"
    for w in "$tmp"/*.whl; do unzip -q -o "$w" -d "$tmp/u"; done
    [ -x "$tmp/u/nvidia/cu13/bin/nvcc" ] || die "the wheels hold no nvidia/cu13/bin/nvcc"
    mkdir -p "$(dirname "$tk")"
    rm -rf "$tk"
    cp -a "$tmp/u/nvidia/cu13" "$tk"
    ln -s lib "$tk/lib64"
    (cd "$tk/lib" && for f in libcudart.so.13 libnvrtc.so.13 libcurand.so.10 libnvvm.so.4 \
        libcublas.so.13 libcublasLt.so.13; do [ -e "$f" ] && ln -sf "$f" "${f%.so.*}.so"; done)
    rm -rf "$tmp"
}

# The toolkit.
if [ -n "${CUDA_HOME:-${CUDA_PATH:-}}" ] && [ -x "${CUDA_HOME:-${CUDA_PATH:-}}/bin/nvcc" ]; then
    TK="${CUDA_HOME:-${CUDA_PATH:-}}"
elif command -v nvcc >/dev/null; then
    TK="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
else
    [ -x "$TOOLKIT/bin/nvcc" ] || fetch_toolkit "$TOOLKIT"
    TK="$TOOLKIT"
fi
NVCC_VERSION="$("$TK/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
[ -n "$NVCC_VERSION" ] || die "$TK/bin/nvcc --version names no release"
read -r MAJOR MINOR <<<"$NVCC_VERSION"
say "CUDA toolkit $MAJOR.$MINOR at $TK, compute capability $CAP"

# libcuda at link time: the driver's, the toolkit's stub, or a stub built
# from cudarc's driver bindings (never used at run time: the GPU machine's
# driver provides libcuda.so.1).
LIBPATH="$TK/lib64:$TK/lib"
if [ -e "$TK/lib64/stubs/libcuda.so" ] || [ -e "$TK/lib/stubs/libcuda.so" ]; then
    LIBPATH="$LIBPATH:$TK/lib64/stubs:$TK/lib/stubs"
elif ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so '; then
    (cd "$ROOT" && cargo fetch --locked >/dev/null) || die "cargo fetch failed: the stub for libcuda needs cudarc's sources"
    REG="${CARGO_HOME:-$HOME/.cargo}/registry/src"
    VER="$(sed -n '/^name = "cudarc"$/{n;s/^version = "\(.*\)"$/\1/p;}' "$ROOT/Cargo.lock" | head -n 1)"
    [ -n "$VER" ] || die "Cargo.lock names no cudarc version"
    CUDARC="$(find "$REG" -mindepth 2 -maxdepth 2 -type d -name "cudarc-$VER" 2>/dev/null | head -n 1)"
    [ -n "$CUDARC" ] || die "cudarc $VER's sources are not in $REG: run cargo fetch"
    STUB="$TK/lib/stubs"
    mkdir -p "$STUB"
    grep -ohE 'pub unsafe fn cu[A-Za-z0-9_]+\(' "$CUDARC/src/driver/sys/mod.rs" \
        | sed -E 's/pub unsafe fn (cu[A-Za-z0-9_]+)\(/\1/' | sort -u \
        | awk '{print "int "$1"(void){return 999;}"}' >"$STUB/stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUB/libcuda.so" "$STUB/stub.c"
    say "built a link-time stub for libcuda in $STUB (not for run time)"
    LIBPATH="$LIBPATH:$STUB"
fi

export CUDA_HOME="$TK" CUDA_PATH="$TK" CUDA_ROOT="$TK" PATH="$TK/bin:$PATH"
export CUDARC_CUDA_VERSION="$((MAJOR * 1000 + MINOR * 10))" CUDA_COMPUTE_CAP="$CAP"
export LIBRARY_PATH="$LIBPATH${LIBRARY_PATH:+:$LIBRARY_PATH}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
say "cargo build --profile cuda-release --features cuda -p chimera-agent (minutes: candle's kernels compile for sm_$CAP)"
(cd "$ROOT" && cargo build --locked --profile cuda-release --features cuda -p chimera-agent)

BIN="$TARGET_DIR/cuda-release/chimera-agent"
[ -x "$BIN" ] || die "the build made no $BIN"
mkdir -p "$OUT"
cp "$BIN" "$OUT/chimera-agent"
strip "$OUT/chimera-agent" 2>/dev/null || say "strip failed; the binary is as cargo made it"
SIZE="$(stat -c %s "$OUT/chimera-agent")"
echo "binary:   $OUT/chimera-agent"
echo "size:     $SIZE bytes ($((SIZE / 1048576)) MiB)"
echo "built:    CUDA $MAJOR.$MINOR, compute capability $CAP (sm_$CAP), profile cuda-release, feature cuda"
echo "needs at run time (ELF NEEDED):"
readelf -d "$OUT/chimera-agent" | sed -n 's/.*Shared library: \[\(.*\)\]/  \1/p'
echo "resolved here (ldd; libcuda.so.1 comes from the GPU machine's driver):"
ldd "$OUT/chimera-agent" 2>&1 | sed 's/^\s*/  /' || true
echo "run it where libcublas/libcudart/libcurand of CUDA $MAJOR are on LD_LIBRARY_PATH, e.g. PyTorch's:"
echo "  export LD_LIBRARY_PATH=\$(python3 -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],\"cu$MAJOR\",\"lib\"))'):\$LD_LIBRARY_PATH"
if [ "$SIZE" -ge $((64 * 1048576)) ]; then
    say "warning: $SIZE bytes is over 64 MiB"
fi

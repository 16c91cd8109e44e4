#!/usr/bin/env bash
# llama.cpp peer for the CPU benchmarks (see /work/shared/PEERS.md).
# Builds llama.cpp's llama-bench / llama-quantize / llama-perplexity from the source
# vendored in a pinned llama-cpp-python sdist, then runs them.
#
#   bench/llamacpp.sh build                                   # prints the bin dir
#   bench/llamacpp.sh bench FILE THREADS [PROMPT] [NEW] [REPS] # llama-bench JSON (128 64 5)
#   bench/llamacpp.sh quantize IN OUT TYPE                     # e.g. TYPE=Q8_0, Q4_K_S
#
# Build directory: $LLAMACPP_DIR (default ~/.cache/chimera/llama.cpp). Needs pip and a C++
# compiler; cmake is installed from PyPI into the build directory when it is missing.
set -euo pipefail

PY_VERSION=0.3.36     # llama-cpp-python; vendors llama.cpp ggml-org/llama.cpp@0c1e57098
PY_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_COMMIT=0c1e57098
DIR=${LLAMACPP_DIR:-$HOME/.cache/chimera/llama.cpp}
BIN=$DIR/build/bin
TOOLS=(llama-bench llama-quantize llama-perplexity llama-server)

build() {
  local t missing=0
  for t in "${TOOLS[@]}"; do [[ -x $BIN/$t ]] || missing=1; done
  if (( missing )); then
    local src=$DIR/src tgz=$DIR/src/llama_cpp_python-$PY_VERSION.tar.gz
    mkdir -p "$src"
    [[ -f $tgz ]] || python3 -m pip download --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$PY_VERSION" -d "$src" >&2
    echo "$PY_SHA256  $tgz" | sha256sum -c --quiet -
    [[ -d $src/llama_cpp_python-$PY_VERSION ]] || tar xzf "$tgz" -C "$src"
    local cmake
    cmake=$(command -v cmake || true)
    if [[ -z $cmake ]]; then
      cmake=$DIR/tools/cmake/data/bin/cmake
      [[ -x $cmake ]] || python3 -m pip install --quiet --target "$DIR/tools" cmake >&2
    fi
    "$cmake" -B "$DIR/build" -S "$src/llama_cpp_python-$PY_VERSION/vendor/llama.cpp" \
      -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_COMMIT="$LLAMA_COMMIT" >&2
    "$cmake" --build "$DIR/build" -j"${JOBS:-2}" --target "${TOOLS[@]}" >&2
  fi
  echo "$BIN"
}

case ${1:-} in
  build) build ;;
  bench)
    [[ $# -ge 3 ]] || { echo "usage: $0 bench FILE THREADS [PROMPT_TOKENS] [NEW_TOKENS] [REPS]" >&2; exit 2; }
    build >/dev/null
    "$BIN/llama-bench" -m "$2" -p "${4:-128}" -n "${5:-64}" -t "$3" -r "${6:-5}" -o json ;;
  quantize)
    [[ $# -eq 4 ]] || { echo "usage: $0 quantize IN OUT TYPE" >&2; exit 2; }
    build >/dev/null
    "$BIN/llama-quantize" --allow-requantize "$2" "$3" "$4" ;;
  *) echo "usage: $0 build | bench FILE THREADS [P] [N] [REPS] | quantize IN OUT TYPE" >&2; exit 2 ;;
esac

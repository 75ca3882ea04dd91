#!/usr/bin/env bash
# Builds llama.cpp's own tools from the sources vendored in the PyPI sdist of
# llama-cpp-python, so Kiln can be compared with (and fixtures produced by)
# the real llama.cpp without reaching GitHub.
#
#   bash scripts/build_llamacpp.sh            # build once, then print the paths
#   KILN_PEERS=/some/dir bash scripts/build_llamacpp.sh
#
# Everything lands in ${KILN_PEERS:-<repo>/target/peers}/llama.cpp-0.3.36/:
#   venv/           Python venv with cmake, ninja, scikit-build-core, numpy and
#                   the vendored gguf-py (importable as `gguf`)
#   src/            the unpacked sdist; src/vendor/llama.cpp holds the sources,
#                   convert_hf_to_gguf.py and gguf-py
#   build/bin/      llama-bench, llama-server, llama-quantize, llama-cli,
#                   llama-simple (greedy generation from a prompt)
#   .complete       written last; its presence makes a rerun exit at once
#
# About 8 minutes on 2 cores the first time. The binaries use -march=native
# (GGML_NATIVE=ON): rebuild (delete the directory) when moving to another CPU.
# convert_hf_to_gguf.py additionally imports torch and transformers; set
# KILN_PEERS_CONVERT_DEPS=1 to install them into the venv too (several GB),
# or run the script with any Python that has them: it prefers the vendored
# gguf-py next to it over an installed one.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VERSION="0.3.36"
PEERS="${KILN_PEERS:-$REPO/target/peers}"
ROOT="$PEERS/llama.cpp-$VERSION"
VENV="$ROOT/venv"
SRC="$ROOT/src"
LLAMA="$SRC/vendor/llama.cpp"
BUILD="$ROOT/build"
BIN="$BUILD/bin"
TOOLS=(llama-bench llama-server llama-quantize llama-cli llama-simple)

print_paths() {
    echo "llama.cpp $VERSION (vendored in llama-cpp-python $VERSION)"
    echo "bin dir:        $BIN"
    for t in "${TOOLS[@]}"; do echo "  $BIN/$t"; done
    echo "convert script: $LLAMA/convert_hf_to_gguf.py"
    echo "gguf-py:        $LLAMA/gguf-py"
    echo "venv python:    $VENV/bin/python"
}

all_built() {
    [[ -f "$ROOT/.complete" && -x "$VENV/bin/python" && -f "$LLAMA/convert_hf_to_gguf.py" ]] || return 1
    local t
    for t in "${TOOLS[@]}"; do [[ -x "$BIN/$t" ]] || return 1; done
}

if all_built; then
    print_paths
    exit 0
fi

command -v python3 >/dev/null || { echo "python3 (with venv and pip) is required" >&2; exit 1; }
command -v c++ >/dev/null || { echo "a C++ compiler (c++) is required" >&2; exit 1; }
start=$(date +%s)
mkdir -p "$ROOT"
rm -f "$ROOT/.complete"

echo "== venv with the build tools: $VENV"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q cmake ninja scikit-build-core numpy
# The tools are called through the venv's bin so that no system cmake/ninja
# (possibly too old) is picked up.
export PATH="$VENV/bin:$PATH"

bash "$REPO/scripts/fetch_llamacpp_sources.sh" >/dev/null

echo "== gguf-py (vendored) for convert_hf_to_gguf.py"
"$PY" -m pip install -q "$LLAMA/gguf-py"
if [[ "${KILN_PEERS_CONVERT_DEPS:-0}" == 1 ]]; then
    "$PY" -m pip install -q torch transformers safetensors sentencepiece
fi

# On CPUs with AMX, -march=native also compiles ggml's AMX matmul, which
# crashes (SIGSEGV in ggml_backend_amx_mul_mat) on the KVM guests this was
# measured on. Kiln does not use AMX either, so both engines run their
# AVX-512 VNNI kernels.
NO_AMX=""
if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
    NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
echo "== cmake + ninja (Release, native${NO_AMX:+, without AMX}, static)"
cmake -S "$LLAMA" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DCMAKE_C_FLAGS="$NO_AMX" -DCMAKE_CXX_FLAGS="$NO_AMX" \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF
ninja -C "$BUILD" "${TOOLS[@]}"

for t in "${TOOLS[@]}"; do
    [[ -x "$BIN/$t" ]] || { echo "ninja finished but $BIN/$t is missing" >&2; exit 1; }
done
touch "$ROOT/.complete"
echo "== built in $(( $(date +%s) - start )) s"
print_paths

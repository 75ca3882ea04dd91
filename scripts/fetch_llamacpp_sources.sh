#!/usr/bin/env bash
# Downloads and unpacks llama.cpp's sources as vendored in the PyPI sdist of
# llama-cpp-python, without building anything: the tokenizer test vectors
# (models/ggml-vocab-*.gguf with .inp/.out) and chat templates
# (models/templates/*.jinja) that Kiln's tests compare against, and the
# sources scripts/build_llamacpp.sh builds.
#
#   bash scripts/fetch_llamacpp_sources.sh     # prints the llama.cpp directory
#   KILN_PEERS=/some/dir bash scripts/fetch_llamacpp_sources.sh
#
# Lands in ${KILN_PEERS:-<repo>/target/peers}/llama.cpp-0.3.36/:
#   venv/       Python venv with scikit-build-core and cmake, which pip
#               needs to read the sdist's metadata (nothing is compiled)
#   download/   the sdist (about 75 MB)
#   src/        the unpacked sdist; src/vendor/llama.cpp holds the sources
# A rerun with the sources in place only prints the path. Progress goes to
# stderr; stdout is the llama.cpp directory alone.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VERSION="0.3.36"
PEERS="${KILN_PEERS:-$REPO/target/peers}"
ROOT="$PEERS/llama.cpp-$VERSION"
VENV="$ROOT/venv"
SRC="$ROOT/src"
LLAMA="$SRC/vendor/llama.cpp"

unpacked() {
    [[ -f "$LLAMA/CMakeLists.txt" && -d "$LLAMA/models/templates" ]]
}

if ! unpacked; then
    command -v python3 >/dev/null || { echo "python3 (with venv and pip) is required" >&2; exit 1; }
    mkdir -p "$ROOT"
    echo "== venv for pip: $VENV" >&2
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" >&2
    PY="$VENV/bin/python"
    "$PY" -m pip install -q --upgrade pip >&2
    "$PY" -m pip install -q scikit-build-core cmake >&2

    echo "== sdist llama-cpp-python==$VERSION" >&2
    DL="$ROOT/download"
    mkdir -p "$DL"
    sdist="$DL/llama_cpp_python-$VERSION.tar.gz"
    if [[ ! -f "$sdist" ]]; then
        # --no-binary only for this package: `:all:` would make pip build its
        # build dependencies from source. --no-build-isolation uses the venv's
        # scikit-build-core (which looks for cmake) to read the sdist's metadata.
        if ! "$PY" -m pip download --no-deps --no-build-isolation \
                --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$DL" >&2; then
            echo "pip could not download llama-cpp-python==$VERSION (needs access to PyPI)" >&2
            exit 1
        fi
    fi
    [[ -f "$sdist" ]] || { echo "no sdist llama_cpp_python-$VERSION.tar.gz in $DL" >&2; exit 1; }
    rm -rf "$SRC" "$ROOT/unpack"
    mkdir -p "$ROOT/unpack"
    tar -xzf "$sdist" -C "$ROOT/unpack"
    mv "$ROOT/unpack/llama_cpp_python-$VERSION" "$SRC"
    rmdir "$ROOT/unpack"
    unpacked || { echo "no vendor/llama.cpp with models/templates in the sdist at $SRC" >&2; exit 1; }
fi
echo "$LLAMA"

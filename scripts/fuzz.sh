#!/usr/bin/env bash
# libFuzzer targets for the GGUF reader and the quantized-checkpoint loaders
# (fuzz/fuzz_targets/): gguf_file, quantization_config, quantized_tensors.
#
#   bash scripts/fuzz.sh                      # every target, 60 s each
#   bash scripts/fuzz.sh all 120              # every target, 2 minutes each
#   bash scripts/fuzz.sh gguf_file 600        # one target, 10 minutes
#   bash scripts/fuzz.sh gguf_file 60 -jobs=2 # extra arguments go to libFuzzer
#
# Needs a nightly toolchain (`rustup toolchain install nightly`). Uses
# `cargo fuzz run` when cargo-fuzz is installed, else builds the targets
# with the same instrumentation flags itself and runs the binaries.
# Seeds live in fuzz/corpus/<target>/ (inputs the fuzzer adds there are
# not committed); a crashing input is written to fuzz/artifacts/<target>/
# and reproduces with `bash scripts/fuzz.sh <target> 0 <that file>`
# (or `cargo fuzz run <target> <that file>`). Debug assertions and overflow
# checks are on, as in `cargo test`. The stable counterpart that CI runs is
# tests/tests/malformed_checkpoints.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly Rust toolchain; install one with 'rustup toolchain install nightly'" >&2
    exit 1
fi

TARGETS=()
for f in fuzz/fuzz_targets/*.rs; do
    TARGETS+=("$(basename "$f" .rs)")
done

if [ $# -ge 1 ] && [ "$1" != all ]; then
    found=0
    for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && found=1; done
    if [ "$found" = 0 ]; then
        echo "fuzz.sh: unknown target '$1' (targets: ${TARGETS[*]})" >&2
        exit 2
    fi
    TARGETS=("$1")
fi
SECONDS_EACH="${2:-60}"
# Further arguments: files to run once each, or libFuzzer options.
INPUTS=()
EXTRA=()
for a in "${@:3}"; do
    if [ -f "$a" ]; then INPUTS+=("$a"); else EXTRA+=("$a"); fi
done
# A run that takes longer than this on one input is reported as a hang.
LIBFUZZER_ARGS=(-timeout=10 -print_final_stats=1)
if [ "$SECONDS_EACH" != 0 ]; then
    LIBFUZZER_ARGS+=("-max_total_time=$SECONDS_EACH")
fi

HOST="$(rustc +nightly -vV | sed -n 's/^host: //p')"
if cargo fuzz --version >/dev/null 2>&1; then
    run() {
        cargo +nightly fuzz run --sanitizer none --debug-assertions "$1" "${INPUTS[@]}" \
            -- "${LIBFUZZER_ARGS[@]}" "${EXTRA[@]}"
    }
else
    echo "== cargo-fuzz not installed: building the targets with nightly directly"
    # The flags cargo-fuzz passes (no sanitizer); --target keeps them off
    # build scripts and proc-macros.
    RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
        cargo +nightly build --release --manifest-path fuzz/Cargo.toml \
        --target "$HOST" --target-dir fuzz/target --bins
    run() {
        mkdir -p "fuzz/artifacts/$1" "fuzz/corpus/$1"
        local inputs=("fuzz/corpus/$1")
        if [ ${#INPUTS[@]} -gt 0 ]; then inputs=("${INPUTS[@]}"); fi
        "fuzz/target/$HOST/release/$1" -artifact_prefix="fuzz/artifacts/$1/" \
            "${LIBFUZZER_ARGS[@]}" "${EXTRA[@]}" "${inputs[@]}"
    }
fi

failed=()
for t in "${TARGETS[@]}"; do
    echo "== $t (${SECONDS_EACH}s)"
    if ! run "$t"; then
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "== no crashes in: ${TARGETS[*]}"

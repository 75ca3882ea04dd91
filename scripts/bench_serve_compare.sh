#!/usr/bin/env bash
# Serve the same GGUF with `kiln serve` and with llama.cpp's server, one after
# the other on this machine (CPU, same thread count), run the same
# `kiln bench serve` against each, and print Kiln / llama.cpp ratios.
#
#   bash scripts/bench_serve_compare.sh
#   CONCURRENCY=1,8 NUM_PROMPTS=32 THREADS=2 bash scripts/bench_serve_compare.sh
#
# llama.cpp side: its own `llama-server` with continuous batching and one
# slot per request of the largest concurrency level (-np N), built from the
# sources vendored in the llama-cpp-python sdist by scripts/build_llamacpp.sh
# (cached; about 8 minutes the first time), or LLAMA_SERVER_BIN.
#
# Every concurrency level (and every warm-up request) gets prompts of its own
# from `kiln bench serve`, so neither server answers a timed request from a
# prompt cache filled by an earlier level.
#
# Settings (environment): THREADS (2), CONCURRENCY (1,8,32), NUM_PROMPTS (64),
# INPUT_LEN (128), OUTPUT_LEN (128), SEED (0), GGUF (default: the default
# model, pulled into the Kiln cache), KILN_BIN (target/release/kiln, built when
# missing), LLAMA_SERVER_BIN (default: the one scripts/build_llamacpp.sh builds),
# BENCH_KILN_PORT (18080), BENCH_LLAMA_PORT (18081), STARTUP_TIMEOUT seconds
# (300), OUT_DIR (target/bench-compare). Results:
# $OUT_DIR/{kiln,llamacpp}.{json,txt} and logs.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS="${THREADS:-2}"
CONCURRENCY="${CONCURRENCY:-1,8,32}"
NUM_PROMPTS="${NUM_PROMPTS:-64}"
INPUT_LEN="${INPUT_LEN:-128}"
OUTPUT_LEN="${OUTPUT_LEN:-128}"
SEED="${SEED:-0}"
KILN_BIN="${KILN_BIN:-target/release/kiln}"
LLAMA_SERVER_BIN="${LLAMA_SERVER_BIN:-}"
KILN_PORT_BENCH="${BENCH_KILN_PORT:-18080}"
LLAMA_PORT_BENCH="${BENCH_LLAMA_PORT:-18081}"
STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-300}"
OUT_DIR="${OUT_DIR:-target/bench-compare}"
SERVED_NAME="bench-model"

command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required (to compare the JSON results)" >&2; exit 1; }
mkdir -p "$OUT_DIR"

if [[ ! -x "$KILN_BIN" ]]; then
    echo "== building kiln (release) and the CPU backend"
    cargo build --release -p kiln -p kiln-backend-cpu
fi
GGUF="${GGUF:-$("$KILN_BIN" pull --print-path smollm2-135m-instruct)}"
[[ -f "$GGUF" ]] || { echo "no GGUF file at $GGUF" >&2; exit 1; }

# Largest concurrency level, and a context that holds one request.
MAX_CONC="$(tr ',' '\n' <<<"$CONCURRENCY" | sort -n | tail -1)"
CTX=$((INPUT_LEN + OUTPUT_LEN + 64))

SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT INT TERM

# wait_ready URL LOG: until GET URL/v1/models answers, the server dies, or the timeout.
wait_ready() {
    local url="$1" log="$2" waited=0
    until curl -fsS "$url/v1/models" >/dev/null 2>&1; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "the server exited during start-up; last lines of $log:" >&2
            tail -n 30 "$log" >&2
            exit 1
        fi
        if (( waited >= STARTUP_TIMEOUT * 5 )); then
            echo "the server did not answer within ${STARTUP_TIMEOUT}s; see $log" >&2
            exit 1
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
}

# bench NAME URL: the same client settings for both servers.
bench() {
    local name="$1" url="$2"
    echo "== kiln bench serve against $name ($url)"
    "$KILN_BIN" bench serve --url "$url" --model "$SERVED_NAME" \
        --concurrency "$CONCURRENCY" --num-prompts "$NUM_PROMPTS" \
        --input-len "$INPUT_LEN" --output-len "$OUTPUT_LEN" --seed "$SEED" \
        --json "$OUT_DIR/$name.json" | tee "$OUT_DIR/$name.txt"
}

echo "== model: $GGUF; $THREADS threads; concurrency $CONCURRENCY; $NUM_PROMPTS prompts of $INPUT_LEN tokens; $OUTPUT_LEN new tokens"

echo "== starting kiln serve on port $KILN_PORT_BENCH"
"$KILN_BIN" serve "$GGUF" --served-model-name "$SERVED_NAME" \
    --backend cpu --threads "$THREADS" --host 127.0.0.1 --port "$KILN_PORT_BENCH" \
    --max-model-len "$CTX" --max-num-seqs "$MAX_CONC" --no-enable-prefix-caching \
    >"$OUT_DIR/kiln-serve.log" 2>&1 &
SERVER_PID=$!
wait_ready "http://127.0.0.1:$KILN_PORT_BENCH" "$OUT_DIR/kiln-serve.log"
bench kiln "http://127.0.0.1:$KILN_PORT_BENCH"
stop_server

if [[ -z "$LLAMA_SERVER_BIN" ]]; then
    bash scripts/build_llamacpp.sh >"$OUT_DIR/llamacpp-build.log" 2>&1 || {
        echo "building llama.cpp failed; see $OUT_DIR/llamacpp-build.log" >&2
        exit 1
    }
    LLAMA_SERVER_BIN="$(sed -n 's/^bin dir: *//p' "$OUT_DIR/llamacpp-build.log")/llama-server"
fi
[[ -x "$LLAMA_SERVER_BIN" ]] || { echo "no llama-server at $LLAMA_SERVER_BIN" >&2; exit 1; }
echo "== starting llama.cpp llama-server on port $LLAMA_PORT_BENCH (-np $MAX_CONC, continuous batching)"
"$LLAMA_SERVER_BIN" -m "$GGUF" --host 127.0.0.1 --port "$LLAMA_PORT_BENCH" \
    -t "$THREADS" -tb "$THREADS" -np "$MAX_CONC" -c $((MAX_CONC * CTX)) -cb \
    --alias "$SERVED_NAME" >"$OUT_DIR/llamacpp-serve.log" 2>&1 &
SERVER_PID=$!
wait_ready "http://127.0.0.1:$LLAMA_PORT_BENCH" "$OUT_DIR/llamacpp-serve.log"
bench llamacpp "http://127.0.0.1:$LLAMA_PORT_BENCH"
stop_server

echo "== Kiln / llama.cpp (throughput: higher is better for Kiln; latency: lower is better for Kiln)"
python3 - "$OUT_DIR/kiln.json" "$OUT_DIR/llamacpp.json" <<'PY'
import json, sys
kiln, llama = (json.load(open(p)) for p in sys.argv[1:3])
def ratio(a, b):
    return f"{a / b:6.2f}x" if a and b else "     -"
def p50(run, key):
    s = run.get(key)
    return s["p50"] if s else None
print(f"{'run':<16} {'out tok/s':>21} {'ratio':>8} {'req/s ratio':>12} {'TTFT p50 ms':>21} {'ratio':>8} {'ITL p50 ms':>19} {'ratio':>8}")
by_label = {r["label"]: r for r in llama["runs"]}
for k in kiln["runs"]:
    l = by_label.get(k["label"])
    if l is None:
        continue
    print(
        f"{k['label']:<16} {k['output_throughput']:>9.1f} / {l['output_throughput']:<9.1f} {ratio(k['output_throughput'], l['output_throughput']):>8}"
        f" {ratio(k['request_throughput'], l['request_throughput']):>12}"
        f" {p50(k, 'ttft_ms') or 0:>9.1f} / {p50(l, 'ttft_ms') or 0:<9.1f} {ratio(p50(k, 'ttft_ms'), p50(l, 'ttft_ms')):>8}"
        f" {p50(k, 'itl_ms') or 0:>8.1f} / {p50(l, 'itl_ms') or 0:<8.1f} {ratio(p50(k, 'itl_ms'), p50(l, 'itl_ms')):>8}"
    )
    for name, run in (("kiln", k), ("llama.cpp", l)):
        if run["failed"]:
            print(f"    {name}: {run['failed']} failed requests: {run['errors'][:1]}")
        if run.get("short_outputs"):
            print(f"    {name}: {run['short_outputs']} responses shorter than asked; ratios are not comparable")
PY

#!/usr/bin/env bash
# The cost of structured outputs: one `kiln serve`, the same `kiln bench serve`
# load with and without a JSON Schema on every request, and the ratios.
#
#   bash scripts/bench_structured.sh
#   CONCURRENCY=32 NUM_PROMPTS=64 bash scripts/bench_structured.sh
#
# Two measurements, each with fresh prompts (a seed of its own per run, and
# no prefix caching):
#   throughput: CONCURRENCY streams of OUTPUT_LEN tokens each, free and
#               constrained to an array of at least 200 strings (no output of
#               OUTPUT_LEN tokens completes it, so every request generates
#               exactly OUTPUT_LEN tokens either way); the figure is the
#               constrained output tok/s as a share of the free one
#               (the median over REPEATS back-to-back pairs).
#   TTFT:       one request at a time, free and constrained to an object with
#               50 required properties; the figure is the growth of TTFT p50 in
#               ms. The warm-up request compiles the grammar (compiled grammars
#               are cached per schema); the first timed run with no warm-up,
#               reported beside it, includes that compilation once.
#
# Settings (environment): THREADS (2), CONCURRENCY (32), NUM_PROMPTS (64),
# INPUT_LEN (128), OUTPUT_LEN (64), TTFT_PROMPTS (16), REPEATS (4), GGUF (default: the
# default model, pulled into the Kiln cache), KILN_BIN (target/release/kiln,
# built when missing), PORT (18090), STARTUP_TIMEOUT seconds (300), OUT_DIR
# (target/bench-structured). Results: $OUT_DIR/*.json and logs.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS="${THREADS:-2}"
CONCURRENCY="${CONCURRENCY:-32}"
NUM_PROMPTS="${NUM_PROMPTS:-64}"
INPUT_LEN="${INPUT_LEN:-128}"
OUTPUT_LEN="${OUTPUT_LEN:-64}"
TTFT_PROMPTS="${TTFT_PROMPTS:-16}"
REPEATS="${REPEATS:-4}"
KILN_BIN="${KILN_BIN:-target/release/kiln}"
PORT="${PORT:-18090}"
STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-300}"
OUT_DIR="${OUT_DIR:-target/bench-structured}"
URL="http://127.0.0.1:$PORT"

command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required (to compare the JSON results)" >&2; exit 1; }
mkdir -p "$OUT_DIR"
if [[ ! -x "$KILN_BIN" ]]; then
    echo "== building kiln (release) and the CPU backend"
    cargo build --release -p kiln -p kiln-backend-cpu
fi
GGUF="${GGUF:-$("$KILN_BIN" pull --print-path smollm2-135m-instruct)}"
[[ -f "$GGUF" ]] || { echo "no GGUF file at $GGUF" >&2; exit 1; }

python3 - "$OUT_DIR" <<'EOF'
import json, sys
out = sys.argv[1]
array = {"type": "object", "required": ["items"],
         "properties": {"items": {"type": "array", "minItems": 200,
                                  "items": {"type": "string", "maxLength": 12}}}}
props = {f"field_{i}": {"type": ["string", "integer", "boolean"][i % 3]} for i in range(50)}
wide = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
for name, schema in (("array", array), ("props50", wide)):
    with open(f"{out}/{name}.schema.json", "w") as f:
        json.dump(schema, f)
EOF

SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap stop_server EXIT INT TERM

"$KILN_BIN" serve "$GGUF" --served-model-name bench-model --backend cpu --threads "$THREADS" \
    --host 127.0.0.1 --port "$PORT" --max-model-len $((INPUT_LEN + OUTPUT_LEN + 64)) \
    --max-num-seqs "$CONCURRENCY" --no-enable-prefix-caching >"$OUT_DIR/kiln-serve.log" 2>&1 &
SERVER_PID=$!
waited=0
until curl -fsS "$URL/v1/models" >/dev/null 2>&1; do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$OUT_DIR/kiln-serve.log" >&2; exit 1; }
    (( waited < STARTUP_TIMEOUT * 5 )) || { echo "no answer in ${STARTUP_TIMEOUT}s" >&2; exit 1; }
    sleep 0.2
    waited=$((waited + 1))
done

# bench NAME SEED CONCURRENCY PROMPTS OUTPUT WARMUP [SCHEMA]
bench() {
    local name="$1" seed="$2" conc="$3" prompts="$4" output="$5" warmup="$6" schema="${7:-}"
    echo "== $name"
    "$KILN_BIN" bench serve --url "$URL" --model bench-model --concurrency "$conc" \
        --num-prompts "$prompts" --input-len "$INPUT_LEN" --output-len "$output" \
        --seed "$seed" --warmup "$warmup" ${schema:+--json-schema "$schema"} \
        --json "$OUT_DIR/$name.json" | tee "$OUT_DIR/$name.txt"
}

# Free and constrained runs come in pairs, REPEATS pairs (fresh prompts every
# run), in the order free-constrained, constrained-free, ... so that a drift
# of the machine's speed during the runs does not favour either kind; each
# pair gives a ratio and the median ratio is the figure.
for r in $(seq 1 "$REPEATS"); do
    free_run() { bench free-c"$CONCURRENCY"-$r $((10 * r + 1)) "$CONCURRENCY" "$NUM_PROMPTS" "$OUTPUT_LEN" 1; }
    json_run() { bench json-c"$CONCURRENCY"-$r $((10 * r + 2)) "$CONCURRENCY" "$NUM_PROMPTS" "$OUTPUT_LEN" 1 "$OUT_DIR/array.schema.json"; }
    free_ttft() { bench free-ttft-$r $((10 * r + 3)) 1 "$TTFT_PROMPTS" 16 1; }
    json_ttft() { bench json-ttft-$r $((10 * r + 4)) 1 "$TTFT_PROMPTS" 16 1 "$OUT_DIR/props50.schema.json"; }
    if (( r % 2 )); then free_run; json_run; free_ttft; json_ttft; else json_run; free_run; json_ttft; free_ttft; fi
done
# A schema the server has not compiled yet: the first request pays for it.
python3 - "$OUT_DIR" <<'EOF'
import json, sys
out = sys.argv[1]
schema = json.load(open(f"{out}/props50.schema.json"))
schema["properties"] = {k.replace("field_", "cold_"): v for k, v in schema["properties"].items()}
schema["required"] = list(schema["properties"])
json.dump(schema, open(f"{out}/props50-cold.schema.json", "w"))
EOF
bench json-ttft-cold 5 1 1 16 0 "$OUT_DIR/props50-cold.schema.json"
bench free-ttft-single 6 1 1 16 0
stop_server

python3 - "$OUT_DIR" "$CONCURRENCY" "$REPEATS" <<'EOF'
import json, statistics, sys
out, conc, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
def run(name):
    r = json.load(open(f"{out}/{name}.json"))["runs"][0]
    if r["failed"] or r["short_outputs"]:
        sys.exit(f"{name}: {r['failed']} failed, {r['short_outputs']} short outputs: {r['errors'][:3]}")
    return r
def pairs(kind, key):
    """Per pair, (free, constrained) figures."""
    out = []
    for i in range(1, repeats + 1):
        a, b = run(f"free-{kind}-{i}"), run(f"json-{kind}-{i}")
        out.append((a["output_throughput"], b["output_throughput"]) if key == "tput"
                   else (a["ttft_ms"]["p50"], b["ttft_ms"]["p50"]))
    return out
tput = pairs(f"c{conc}", "tput")
ttft = pairs("ttft", "ttft")
share = statistics.median(b / a for a, b in tput)
growth = statistics.median(b - a for a, b in ttft)
free, constrained = statistics.median(a for a, _ in tput), statistics.median(b for _, b in tput)
t0, t1 = statistics.median(a for a, _ in ttft), statistics.median(b for _, b in ttft)
cold, single = run("json-ttft-cold")["ttft_ms"]["p50"], run("free-ttft-single")["ttft_ms"]["p50"]
print(f"\n| measure (median of {repeats} pairs) | free | JSON Schema | figure |\n|---|---|---|---|")
print(f"| output tok/s at {conc} concurrent | {free:.1f} | {constrained:.1f} | {100 * share:.1f}% of free |")
print(f"| TTFT p50, 50-property schema (compiled) | {t0:.1f} ms | {t1:.1f} ms | {growth:+.1f} ms |")
print(f"| TTFT, 50-property schema first seen (one request each) | {single:.1f} ms | {cold:.1f} ms | {cold - single:+.1f} ms |")
print("pairs, output tok/s (free, JSON Schema): " + ", ".join(f"({a:.1f}, {b:.1f})" for a, b in tput)
      + f"; lowest share {100 * min(b / a for a, b in tput):.1f}%")
EOF

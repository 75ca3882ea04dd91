"""llama.cpp (llama-cpp-python) single-stream speed on a GGUF model, for
side-by-side comparison with Kiln's offline benchmark:

    python scripts/bench_llamacpp.py MODEL.gguf [threads] [prompt_tokens] [gen_tokens]

Defaults: 2 threads, a 512-token prompt, 128 decoded tokens. Prints one JSON
line: prompt-processing and decode tokens/s, the median of 3 runs after a
warm-up, both from wall-clock timings around llama.cpp's eval calls (decode
includes greedy sampling) and from llama.cpp's own perf counters.
"""
import json
import statistics
import sys
import time

import llama_cpp
from llama_cpp import Llama

RUNS = 3

model = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
prompt_len = int(sys.argv[3]) if len(sys.argv) > 3 else 512
gen_len = int(sys.argv[4]) if len(sys.argv) > 4 else 128

llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
            n_batch=max(512, prompt_len), n_ubatch=max(512, prompt_len), logits_all=False, verbose=False)
ctx = llm._ctx.ctx
# Deterministic, varied token ids (no tokenizer round trip).
prompt = [1000 + (i * 7919) % 30000 for i in range(prompt_len)]


def perf():
    """llama.cpp's counters: (prompt ms, prompt tokens, decode ms, decode tokens)."""
    p = llama_cpp.llama_perf_context(ctx)
    return p.t_p_eval_ms, p.n_p_eval, p.t_eval_ms, p.n_eval


def prompt_run():
    """Tokens/s for one prompt of `prompt_len` tokens: (wall clock, perf counters)."""
    llm.reset()
    llama_cpp.llama_perf_context_reset(ctx)
    t = time.perf_counter()
    llm.eval(prompt)
    llama_cpp.llama_synchronize(ctx)  # eval may return before the graph finishes; this also books the counters
    wall = prompt_len / (time.perf_counter() - t)
    ms, n, _, _ = perf()
    return wall, n / ms * 1000.0


def decode_run():
    """Tokens/s for `gen_len` greedy single-token steps after an 8-token prompt."""
    llm.reset()
    llm.eval(prompt[:8])
    llama_cpp.llama_perf_context_reset(ctx)
    t = time.perf_counter()
    for _ in range(gen_len):
        tok = llm.sample(temp=0.0, top_k=1, repeat_penalty=1.0)
        llm.eval([tok])
    llama_cpp.llama_synchronize(ctx)
    wall = gen_len / (time.perf_counter() - t)
    _, _, ms, n = perf()
    return wall, n / ms * 1000.0


prompt_run()
decode_run()
pp = [prompt_run() for _ in range(RUNS)]
tg = [decode_run() for _ in range(RUNS)]


def median(rows, col):
    return round(statistics.median(r[col] for r in rows), 1)


print(json.dumps({
    "engine": "llama.cpp", "version": llama_cpp.__version__, "threads": threads, "runs": RUNS,
    f"pp{prompt_len}_tok_s": median(pp, 0), f"tg{gen_len}_tok_s": median(tg, 0),
    f"pp{prompt_len}_tok_s_perf": median(pp, 1), f"tg{gen_len}_tok_s_perf": median(tg, 1),
}))

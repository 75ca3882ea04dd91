"""llama.cpp (llama-cpp-python) single-stream speed on a GGUF model, for
side-by-side comparison with `kiln bench offline`:
    python scripts/bench_llamacpp.py MODEL.gguf [threads] [prompt_tokens] [gen_tokens]
Prints one JSON line: prompt-processing tokens/s and decode tokens/s
(median of 3 runs, from wall-clock timings around llama.cpp's eval calls).
"""
import json
import statistics
import sys
import time

from llama_cpp import Llama

model = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
prompt_len = int(sys.argv[3]) if len(sys.argv) > 3 else 512
gen_len = int(sys.argv[4]) if len(sys.argv) > 4 else 128

llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, n_batch=512,
            logits_all=False, verbose=False)
prompt = [1000 + (i * 7919) % 30000 for i in range(prompt_len)]

pp, tg = [], []
llm.reset()
llm.eval(prompt[:16])
for _ in range(3):
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    pp.append(prompt_len / (time.perf_counter() - t))
    llm.reset()
    llm.eval(prompt[:8])
    t = time.perf_counter()
    for _ in range(gen_len):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
    tg.append(gen_len / (time.perf_counter() - t))
print(json.dumps({"engine": "llama.cpp", "version": __import__("llama_cpp").__version__, "threads": threads,
                  f"pp{prompt_len}_tok_s": round(statistics.median(pp), 1),
                  f"tg{gen_len}_tok_s": round(statistics.median(tg), 1)}))

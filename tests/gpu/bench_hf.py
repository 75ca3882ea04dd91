"""HF transformers `generate` throughput on the GPU, for comparison with
`kiln bench offline`: random 128-token prompts, 128 new tokens (EOS ignored),
bf16, at the given batch sizes.

    python tests/gpu/bench_hf.py MODEL_DIR 1,32
"""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM

model_dir = sys.argv[1]
batches = [int(b) for b in sys.argv[2].split(",")]
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to("cuda").eval()
vocab = model.config.vocab_size
results = {}
for b in batches:
    ids = torch.randint(1000, vocab - 1, (b, 128), device="cuda")
    kwargs = dict(max_new_tokens=128, min_new_tokens=128, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids[:, :16], max_new_tokens=4, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        t = time.perf_counter()
        model.generate(ids, **kwargs)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
    results[b] = round(b * 128 / dt, 1)
print(json.dumps({"engine": "transformers", "model": model_dir, "tokens_per_s": results}))

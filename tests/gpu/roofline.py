"""Device-to-device copy bandwidth (bytes read + written per second) and the
batch-1 decode roofline for a model: weight bytes per token ÷ bandwidth.

    python tests/gpu/roofline.py MODEL_DIR [MODEL_DIR ...]
"""
import json
import os
import sys
import time

import torch

x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(10):
    y.copy_(x)
torch.cuda.synchronize()
bw = 2 * x.numel() * 10 / (time.perf_counter() - t)
out = {"copy_bandwidth_GBps": round(bw / 1e9, 1)}
for d in sys.argv[1:]:
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".safetensors"))
    out[d] = {"weight_bytes": size, "roofline_tok_s": round(bw / size, 1)}
print(json.dumps(out))

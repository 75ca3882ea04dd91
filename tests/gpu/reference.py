"""Reference for Kiln's GPU parity test, run on the GPU machine with
transformers: the default model (GGUF, dequantized) and its f32 safetensors
form, both run in bf16 on CUDA. For the first 10 parity prompts it records
16 greedy tokens and the last-position logits.

    python tests/gpu/reference.py MODEL.gguf OUT_DIR
Writes OUT_DIR/reference.json and the f32 HF directory OUT_DIR/smollm2-f32.
"""
import json
import os
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

gguf = os.path.abspath(sys.argv[1])
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
here = os.path.dirname(os.path.abspath(__file__))
cases = json.load(open(os.path.join(here, "..", "fixtures", "parity_smollm2.json")))["cases"][:10]
gdir, gfile = os.path.dirname(gguf), os.path.basename(gguf)

# The f32 directory (save_pretrained refuses a GGUF-loaded model; rebuild it).
tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gfile)
m32 = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gfile, dtype=torch.float32)
config = AutoConfig.from_pretrained(gdir, gguf_file=gfile)
if hasattr(config, "quantization_config"):
    del config.quantization_config
clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
clean.load_state_dict(m32.state_dict())
f32_dir = os.path.join(out, "smollm2-f32")
clean.save_pretrained(f32_dir, safe_serialization=True)
tok.save_pretrained(f32_dir)
del m32, clean


def run(model):
    model = model.to("cuda").eval()
    rows = []
    for c in cases:
        with torch.no_grad():
            o = model(torch.tensor([c["prompt_ids"]], device="cuda"), use_cache=True)
            logits = o.logits[0, -1].float().cpu()
            past, nxt, toks = o.past_key_values, int(o.logits[0, -1].argmax()), []
            for _ in range(16):
                toks.append(nxt)
                o = model(torch.tensor([[nxt]], device="cuda"), past_key_values=past, use_cache=True)
                past, nxt = o.past_key_values, int(o.logits[0, -1].argmax())
        rows.append({"name": c["name"], "prompt_ids": c["prompt_ids"], "greedy16": toks, "logits": logits.tolist()})
    return rows


ref = {
    "torch": torch.__version__,
    "device": torch.cuda.get_device_name(0),
    "gguf": {"path": gguf, "cases": run(AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gfile, dtype=torch.bfloat16))},
    "f32_dir": {"path": f32_dir, "cases": run(AutoModelForCausalLM.from_pretrained(f32_dir, dtype=torch.bfloat16))},
}
json.dump(ref, open(os.path.join(out, "reference.json"), "w"))
print("reference written:", {k: [r["greedy16"][:4] for r in v["cases"][:2]] for k, v in ref.items() if isinstance(v, dict)})

"""Random-weight Llama-architecture models for GPU benchmarks, written as
bf16 safetensors (weights drawn on the GPU, N(0, 0.02)) with a config the
size of Llama-3.2-1B or Llama-3-8B and a small byte-level tokenizer.

    python tests/gpu/make_random_llama.py llama-3.2-1b|llama-3-8b|overhead-128k OUT_DIR
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

CONFIGS = {
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    # Per-step overhead probe: a full Llama-3 vocabulary on a negligible body.
    "overhead-128k": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    "llama-3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
}
name, out = sys.argv[1], sys.argv[2]
c = CONFIGS[name]
os.makedirs(out, exist_ok=True)
h, i, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"] * (c["hidden_size"] // c["num_attention_heads"])
device = "cuda" if torch.cuda.is_available() else "cpu"
gen = torch.Generator(device=device).manual_seed(0)


def rand(*shape):
    return (torch.randn(*shape, generator=gen, device=device, dtype=torch.float32) * 0.02).to(torch.bfloat16).cpu()


tensors = {"model.embed_tokens.weight": rand(c["vocab_size"], h), "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}
if not c["tie_word_embeddings"]:
    tensors["lm_head.weight"] = rand(c["vocab_size"], h)
shard, shards, index = {}, [], {}
for l in range(c["num_hidden_layers"]):
    p = f"model.layers.{l}."
    shard.update({
        p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
        p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
        p + "self_attn.q_proj.weight": rand(h, h), p + "self_attn.k_proj.weight": rand(kv, h),
        p + "self_attn.v_proj.weight": rand(kv, h), p + "self_attn.o_proj.weight": rand(h, h),
        p + "mlp.gate_proj.weight": rand(i, h), p + "mlp.up_proj.weight": rand(i, h), p + "mlp.down_proj.weight": rand(h, i),
    })
    if len(shard) >= 72 or l == c["num_hidden_layers"] - 1:
        shards.append(shard)
        shard = {}
shards[0].update(tensors)
for n, s in enumerate(shards):
    fname = f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(s, os.path.join(out, fname), metadata={"format": "pt"})
    index.update({k: fname for k in s})
json.dump({"metadata": {}, "weight_map": index}, open(os.path.join(out, "model.safetensors.index.json"), "w"))
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "max_position_embeddings": 4096,
       "rms_norm_eps": 1e-5, "bos_token_id": 257, "eos_token_id": 258, "torch_dtype": "bfloat16", **c}
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
here = os.path.dirname(os.path.abspath(__file__))
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(here, "byte_tokenizer", f), out)
print("wrote", name, "to", out)

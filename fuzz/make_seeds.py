#!/usr/bin/env python3
"""Writes the committed fuzz seeds (standard library only, deterministic).

    python3 fuzz/make_seeds.py

- corpus/gguf_file/*.gguf: three tiny GGUF files, one per container version
  (1, 2 and 3; the second with 64-byte alignment), whose tensors between
  them use every type the GGUF reader dequantizes. Block bytes are random:
  the fuzzer needs valid containers, not meaningful weights.
- corpus/quantization_config/*.json: the config.json of each quantized
  safetensors fixture in tests/fixtures/quantized/.

The quantized_tensors seeds are the target's own byte layout (see the top
of fuzz_targets/quantized_tensors.rs) and are kept as written.
"""

import random
import shutil
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures" / "quantized"

# GGUF type id -> (values per block, bytes per block)
TYPES = {
    "F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20),
    "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34),
    "Q2_K": (10, 256, 84), "Q3_K": (11, 256, 110), "Q4_K": (12, 256, 144),
    "Q5_K": (13, 256, 176), "Q6_K": (14, 256, 210), "IQ4_NL": (20, 32, 18),
    "IQ4_XS": (23, 256, 136), "F64": (28, 1, 8), "BF16": (30, 1, 2),
}

U32, I32, F32, STRING, ARRAY = 4, 5, 6, 8, 9


class Writer:
    def __init__(self, version):
        self.version = version
        self.count = "<I" if version == 1 else "<Q"

    def string(self, s):
        b = s.encode()
        return struct.pack(self.count, len(b)) + b

    def value(self, kind, v):
        if kind == U32:
            return struct.pack("<I", v)
        if kind == I32:
            return struct.pack("<i", v)
        if kind == F32:
            return struct.pack("<f", v)
        if kind == STRING:
            return self.string(v)
        item_kind, items = v
        out = struct.pack("<I", item_kind) + struct.pack(self.count, len(items))
        return out + b"".join(self.value(item_kind, x) for x in items)

    def file(self, metadata, tensors, alignment, rng):
        head = b"GGUF" + struct.pack("<I", self.version)
        head += struct.pack(self.count, len(tensors)) + struct.pack(self.count, len(metadata))
        for key, kind, v in metadata:
            head += self.string(key) + struct.pack("<I", kind) + self.value(kind, v)
        data, infos = b"", b""
        dim = "<I" if self.version == 1 else "<Q"
        for name, type_name, shape in tensors:
            type_id, per_block, block_bytes = TYPES[type_name]
            values = 1
            for d in shape:
                values *= d
            assert values % per_block == 0, (name, shape)
            data += b"\0" * (-len(data) % alignment)
            infos += self.string(name) + struct.pack("<I", len(shape))
            infos += b"".join(struct.pack(dim, d) for d in shape)
            infos += struct.pack("<I", type_id) + struct.pack("<Q", len(data))
            data += rng.randbytes(values // per_block * block_bytes)
        out = head + infos
        return out + b"\0" * (-len(out) % alignment) + data


def tokenizer():
    return [
        ("tokenizer.ggml.model", STRING, "gpt2"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, ["<s>", "a", "b", "ab"])),
        ("tokenizer.ggml.token_type", ARRAY, (I32, [3, 1, 1, 1])),
        ("tokenizer.ggml.merges", ARRAY, (STRING, ["a b"])),
        ("tokenizer.ggml.bos_token_id", U32, 0),
        ("tokenizer.ggml.eos_token_id", U32, 0),
    ]


def model(arch, hidden, extra=()):
    return [
        ("general.architecture", STRING, arch),
        ("general.name", STRING, "seed"),
        (f"{arch}.block_count", U32, 1),
        (f"{arch}.context_length", U32, 64),
        (f"{arch}.embedding_length", U32, hidden),
        (f"{arch}.feed_forward_length", U32, hidden),
        (f"{arch}.attention.head_count", U32, 4),
        (f"{arch}.attention.head_count_kv", U32, 2),
        (f"{arch}.rope.freq_base", F32, 10000.0),
        (f"{arch}.attention.layer_norm_rms_epsilon", F32, 1e-5),
        *extra,
        *tokenizer(),
    ]


def main():
    rng = random.Random(0)
    out = HERE / "corpus" / "gguf_file"
    out.mkdir(parents=True, exist_ok=True)
    seeds = {
        "gemma-v1.gguf": (1, 32, model("gemma", 64), [
            ("token_embd.weight", "Q4_0", [64, 4]),
            ("blk.0.attn_norm.weight", "F32", [64]),
            ("blk.0.attn_q.weight", "Q8_0", [64, 4]),
        ]),
        "qwen2-v2-align64.gguf": (2, 64, model("qwen2", 256, [("general.alignment", U32, 64)]), [
            ("token_embd.weight", "Q4_1", [64, 4]),
            ("blk.0.attn_q.weight", "Q5_1", [64, 4]),
            ("blk.0.attn_q.bias", "F32", [4]),
            ("blk.0.attn_k.weight", "IQ4_NL", [64, 2]),
            ("blk.0.attn_k.bias", "F32", [2]),
            ("blk.0.attn_v.weight", "Q8_0", [64, 2]),
            ("blk.0.ffn_down.weight", "F16", [8, 2, 2]),
        ]),
        "llama-v3-kquants.gguf": (3, 32, model("llama", 256, [("general.file_type", U32, 15)]), [
            ("token_embd.weight", "Q8_0", [256, 4]),
            ("blk.0.attn_norm.weight", "F32", [256]),
            ("blk.0.attn_q.weight", "Q4_K", [256, 8]),
            ("blk.0.attn_k.weight", "Q5_K", [256, 4]),
            ("blk.0.attn_v.weight", "Q6_K", [256, 2]),
            ("blk.0.attn_output.weight", "Q3_K", [256, 2]),
            ("blk.0.ffn_norm.weight", "BF16", [256]),
            ("blk.0.ffn_gate.weight", "Q2_K", [256, 2]),
            ("blk.0.ffn_up.weight", "IQ4_XS", [256, 2]),
            ("blk.0.ffn_down.weight", "Q4_0", [64, 2]),
            ("output_norm.weight", "F16", [256]),
            ("output.weight", "Q5_0", [64, 2]),
            ("rope_freqs.weight", "F64", [4]),
        ]),
    }
    for name, (version, alignment, metadata, tensors) in seeds.items():
        (out / name).write_bytes(Writer(version).file(metadata, tensors, alignment, rng))

    out = HERE / "corpus" / "quantization_config"
    out.mkdir(parents=True, exist_ok=True)
    for config in sorted(FIXTURES.glob("*/config.json")):
        shutil.copyfile(config, out / f"{config.parent.name}.json")


if __name__ == "__main__":
    main()

"""`kiln serve --backend` with the plain-C plugin of examples/c-backend,
compiled here with the system C compiler: the server loads it, says so in
/v1/server_info, and answers completions through it (the tiny Llama fixture,
f32: the operations the C plugin declares)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from conftest import KilnServer

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "target" / "client-tests" / "c-backend"
FIXTURE = ROOT / "tests" / "fixtures" / "families" / "llama"


def f32_copy(src: Path, dst: Path) -> Path:
    """The fixture with its f16 safetensors widened to f32 (the C plugin
    declares f32 and bf16 weights only)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    raw = (src / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out_header, chunks, offset = {}, [], 0
    for name, t in header.items():
        if name == "__metadata__":
            out_header[name] = t
            continue
        begin, end = t["data_offsets"]
        assert t["dtype"] == "F16", (name, t["dtype"])
        count = (end - begin) // 2
        values = struct.unpack(f"<{count}e", data[begin:end])
        chunk = struct.pack(f"<{count}f", *values)
        out_header[name] = {"dtype": "F32", "shape": t["shape"], "data_offsets": [offset, offset + len(chunk)]}
        chunks.append(chunk)
        offset += len(chunk)
    text = json.dumps(out_header).encode()
    text += b" " * (-len(text) % 8)
    (dst / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    return dst


@pytest.fixture(scope="module")
def c_plugin() -> Path:
    cc = os.environ.get("CC", "cc")
    if not shutil.which(cc):
        pytest.fail(f"no C compiler `{cc}`: install gcc or set CC")
    BUILD.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "examples" / "c-backend"), f"CC={cc}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    built = ROOT / "examples" / "c-backend" / "libkiln_backend_c.so"
    target = BUILD / built.name
    shutil.move(str(built), target)
    return target


def serve_tiny_llama(name: str, backend: str) -> KilnServer:
    os.environ["KILN_TEST_TINY_LLAMA"] = str(f32_copy(FIXTURE, BUILD / "tiny-llama-f32"))
    return KilnServer(name, "--backend", backend, "--dtype", "float32", model_env="KILN_TEST_TINY_LLAMA",
                      served_name="tiny-llama", max_model_len=256)


def complete(server: KilnServer):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    return client.completions.create(model="tiny-llama", prompt="The quick brown fox", max_tokens=8,
                                     temperature=0, extra_body={"ignore_eos": True})


def test_serve_answers_through_the_c_backend(c_plugin):
    server = serve_tiny_llama("kiln-serve-c-backend", str(c_plugin))
    try:
        info = httpx.get(server.url + "/v1/server_info", timeout=10).json()["engine"]
        assert info["backend"] == "c"
        r = complete(server)
    finally:
        server.stop_and_check()
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8
    # The same greedy text as the CPU backend (both compute in f32).
    reference = serve_tiny_llama("kiln-serve-c-reference", "cpu")
    try:
        assert complete(reference).choices[0].text == r.choices[0].text
    finally:
        reference.stop_and_check()

#!/usr/bin/env python3
"""CPU speed matrix: Kiln against llama.cpp's `llama-bench` on the same GGUF
files, with every decode figure also given as a share of the memory-bandwidth
roofline (bandwidth / bytes of weights read per token).

    python3 scripts/bench_matrix.py                      # full matrix: about an hour on 2 cores
    python3 scripts/bench_matrix.py --sizes 0.5b --formats q4_0,q8_0
    python3 scripts/bench_matrix.py --smoke              # 0.5B Q4_0, a few tokens: seconds
    python3 scripts/bench_matrix.py --json out.json      # also write the results as JSON

Models: random-weight Llama-architecture GGUFs of about 0.5B, 1.2B and 3B
parameters, and a Mixtral-layout mixture of experts ("moe": 8 experts, 2 per
token, 0.7B parameters of which 0.25B active; its roofline counts the active
experts' bytes) (tied embeddings and the 49152-token tokenizer of SmolLM2, whose
GGUF the Kiln cache provides), written directly by this script: Q4_0 and Q8_0
as random blocks with small f16 scales, F16/BF16 as small random values,
Q4_K_M by llama.cpp's `llama-quantize` from the F16 file. They are cached in
target/bench-models (about 20 GB for every size and format; generation stops
with an error when the disk would run short). Random weights make the speed
figures meaningful and the generated text meaningless. The matrix adds the
real Qwen2.5-Coder 1.5B Instruct Q4_K_M (`kiln pull`), unless --no-real.

Per model, one after the other in the same minutes, `--threads` threads each:
  Kiln:      the engine's offline benchmark (core/engine/examples/bench_offline.rs),
             prefill of a --prompt-token prompt, then decode of --gen tokens
             after it; the median of --reps runs. Also its load time and peak RSS.
  llama.cpp: `llama-bench -p PROMPT -n 0` and `-p 0 -n GEN -d PROMPT`, the
             median of --reps runs after llama-bench's warm-up.
  roofline:  scripts/membw.c (built into target/bench-matrix) sums a buffer
             with the same number of threads before and after the runs; the
             higher of the two medians (of 7 passes) is the ceiling.
  noise:     the cores other processes kept busy during each engine's runs
             (/proc/stat less this script's children); above 0.2 the output
             carries a warning.

Needs: python3 (standard library), cargo (builds the benchmark example and
`kiln` when absent), cc, and llama.cpp's tools from scripts/build_llamacpp.sh
(or --llamacpp-bin DIR). --no-llamacpp runs Kiln alone and says so in the
output. Any missing tool, failed run or missing figure is an error (exit 1).
"""

import argparse
import datetime
import json
import math
import os
import platform
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMACPP_VERSION = "0.3.36"  # must match scripts/build_llamacpp.sh
DONOR = "smollm2-135m-instruct"
REAL = ("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m")

# Llama-architecture shapes: hidden, layers, heads, kv heads, intermediate.
# Every in-feature count is a multiple of 256 so K-quants apply to all matrices.
SIZES = {
    "0.5b": dict(hidden=1024, layers=24, heads=16, kv_heads=4, inter=5120),
    "1.2b": dict(hidden=2048, layers=18, heads=32, kv_heads=8, inter=8192),   # Llama 3.2 1B, 2 more layers
    "3b": dict(hidden=3072, layers=28, heads=24, kv_heads=8, inter=8192),     # Llama 3.2 3B
    # Mixtral layout (GGUF arch `llama` with experts): 0.7B parameters, 0.25B active.
    "moe": dict(hidden=1024, layers=16, heads=16, kv_heads=4, inter=1536, experts=8, experts_used=2),
}
FORMATS = ("q4_0", "q8_0", "f16", "bf16", "q4_k_m")
DEFAULT_FORMATS = ("q4_0", "q8_0", "f16", "q4_k_m")


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- GGUF ------

GGUF_MAGIC = b"GGUF"
ALIGN = 32
# GGUF metadata value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
          BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
# ggml tensor types written here: id, bytes per block, elements per block.
GGML = {"f32": (0, 4, 1), "f16": (1, 2, 1), "q4_0": (2, 18, 32), "q8_0": (8, 34, 32), "bf16": (30, 2, 1)}
FILE_TYPE = {"f16": 1, "q4_0": 2, "q8_0": 7, "bf16": 32}


class Reader:
    def __init__(self, f):
        self.f = f

    def take(self, fmt):
        size = struct.calcsize(fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise BenchError(f"{self.f.name}: truncated GGUF header")
        return struct.unpack(fmt, data)[0]

    def string(self):
        n = self.take("<Q")
        return self.f.read(n).decode("utf-8", errors="replace")

    def value(self, vtype):
        if vtype == STR:
            return self.string()
        if vtype == ARR:
            etype = self.take("<I")
            n = self.take("<Q")
            if etype in SCALAR:
                size = struct.calcsize(SCALAR[etype])
                raw = self.f.read(size * n)
                return etype, list(struct.unpack(f"<{n}{SCALAR[etype][1]}", raw))
            return etype, [self.value(etype) for _ in range(n)]
        return self.take(SCALAR[vtype])


def read_gguf(path):
    """Metadata as {key: (type, value)}; tensors as [(name, elements, bytes)],
    the bytes from the offsets (so any tensor type is measured)."""
    with open(path, "rb") as f:
        r = Reader(f)
        if f.read(4) != GGUF_MAGIC:
            raise BenchError(f"{path} is not a GGUF file")
        version = r.take("<I")
        if version < 2:
            raise BenchError(f"{path}: GGUF v{version} is not read here (v2/v3 only)")
        n_tensors, n_kv = r.take("<Q"), r.take("<Q")
        meta = {}
        for _ in range(n_kv):
            key = r.string()
            vtype = r.take("<I")
            meta[key] = (vtype, r.value(vtype))
        infos = []
        for _ in range(n_tensors):
            name = r.string()
            elems = math.prod(r.take("<Q") for _ in range(r.take("<I")))
            r.take("<I")
            infos.append((name, elems, r.take("<Q")))
        align = meta.get("general.alignment", (U32, ALIGN))[1]
        data_start = -(-f.tell() // align) * align
    end = os.path.getsize(path) - data_start
    ordered = sorted(infos, key=lambda t: t[2])
    tensors = [(name, elems, (ordered[i + 1][2] if i + 1 < len(ordered) else end) - off)
               for i, (name, elems, off) in enumerate(ordered)]
    return meta, tensors


def weight_stats(path):
    """(parameters, weight bytes one decode step reads): every tensor, except
    the embedding table when a separate output matrix exists (then one row of
    it is read), and of each expert stack the share of the experts a token
    uses."""
    meta, tensors = read_gguf(path)
    untied = any(n == "output.weight" for n, _, _ in tensors)
    count = lambda suffix: next((v for k, (_, v) in meta.items() if k.endswith(suffix)), None)
    experts, used = count(".expert_count"), count(".expert_used_count")
    def read_share(name):
        if untied and name == "token_embd.weight":
            return 0.0
        return used / experts if experts and "_exps." in name else 1.0
    read = sum(b * read_share(n) for n, _, b in tensors)
    return sum(e for _, e, _ in tensors), read


def pack_value(vtype, value):
    if vtype == STR:
        raw = value.encode("utf-8")
        return struct.pack("<Q", len(raw)) + raw
    if vtype == ARR:
        etype, items = value
        head = struct.pack("<IQ", etype, len(items))
        if etype in SCALAR:
            return head + struct.pack(f"<{len(items)}{SCALAR[etype][1]}", *items)
        return head + b"".join(pack_value(etype, v) for v in items)
    return struct.pack(SCALAR[vtype], value)


def f16_table():
    """Maps a random high byte of an f16 to one with exponent 2^-10..2^-4
    (sign and top mantissa bits kept): values of about ±0.001..0.06."""
    return bytes((b & 0x83) | ((5 + ((b >> 2) & 0x1F) % 7) << 2) for b in range(256))


def bf16_table():
    """Same for bf16's high byte (sign + 7 exponent bits): exponents 2^-9..2^-4."""
    return bytes((b & 0x80) | (0x3B + (b & 0x7F) % 3) for b in range(256))


def random_pool(fmt, blocks=1 << 16):
    """A pool of valid random data of `fmt`, reused (rotated) across tensors."""
    _, block_bytes, _ = GGML[fmt]
    buf = bytearray(os.urandom(blocks * block_bytes))
    if fmt == "f16":
        buf[1::2] = bytes(buf[1::2]).translate(f16_table())
    elif fmt == "bf16":
        buf[1::2] = bytes(buf[1::2]).translate(bf16_table())
    else:
        # The f16 scale at the start of each block: 2^-9..2^-7 for Q4_0
        # (|w| <= 8d), 2^-13..2^-11 for Q8_0 (|w| <= 128d); mantissa random.
        exp_base = 6 if fmt == "q4_0" else 2
        hi = bytes(buf[1::block_bytes]).translate(
            bytes(((exp_base + (b & 0x7F) % 3) << 2) | (b & 0x83) for b in range(256)))
        buf[1::block_bytes] = hi
    return bytes(buf)


def model_tensors(shape, vocab, fmt):
    h, L, heads, kvh, inter = (shape[k] for k in ("hidden", "layers", "heads", "kv_heads", "inter"))
    kv = h // heads * kvh
    yield "token_embd.weight", [h, vocab], fmt
    for i in range(L):
        b = f"blk.{i}."
        yield b + "attn_norm.weight", [h], "f32"
        yield b + "attn_q.weight", [h, h], fmt
        yield b + "attn_k.weight", [h, kv], fmt
        yield b + "attn_v.weight", [h, kv], fmt
        yield b + "attn_output.weight", [h, h], fmt
        yield b + "ffn_norm.weight", [h], "f32"
        if "experts" in shape:
            e = shape["experts"]
            yield b + "ffn_gate_inp.weight", [h, e], "f32"  # the router stays f32, as llama.cpp keeps it
            yield b + "ffn_gate_exps.weight", [h, inter, e], fmt
            yield b + "ffn_up_exps.weight", [h, inter, e], fmt
            yield b + "ffn_down_exps.weight", [inter, h, e], fmt
            continue
        yield b + "ffn_gate.weight", [h, inter], fmt
        yield b + "ffn_up.weight", [h, inter], fmt
        yield b + "ffn_down.weight", [inter, h], fmt
    yield "output_norm.weight", [h], "f32"


def tensor_bytes(ne, fmt):
    _, block_bytes, block_elems = GGML[fmt]
    n = math.prod(ne)
    if n % block_elems:
        raise BenchError(f"{ne} is not a whole number of {fmt} blocks")
    return n // block_elems * block_bytes


def write_random_gguf(path, size, fmt, donor_meta):
    """A random-weight Llama GGUF of `size` in `fmt` (norms in f32), with the
    donor's tokenizer; written to a temporary name and renamed when complete."""
    shape = SIZES[size]
    vocab = len(donor_meta["tokenizer.ggml.tokens"][1][1])
    tensors = list(model_tensors(shape, vocab, fmt))
    total = sum(tensor_bytes(ne, t) for _, ne, t in tensors) + 64 * 1024 * 1024
    free = shutil.disk_usage(os.path.dirname(path)).free
    if free < total + (2 << 30):
        raise BenchError(f"{path} needs {total / 2**30:.1f} GiB and the disk has {free / 2**30:.1f} GiB free "
                         "(keeping 2 GiB spare); free space, pick fewer --sizes/--formats, or use --evict")
    h = shape["hidden"]
    meta = [
        ("general.architecture", STR, "llama"),
        ("general.name", STR, f"random-llama-{size}"),
        ("general.file_type", U32, FILE_TYPE[fmt]),
        ("llama.block_count", U32, shape["layers"]),
        ("llama.context_length", U32, 4096),
        ("llama.embedding_length", U32, h),
        ("llama.feed_forward_length", U32, shape["inter"]),
        ("llama.attention.head_count", U32, shape["heads"]),
        ("llama.attention.head_count_kv", U32, shape["kv_heads"]),
        ("llama.rope.dimension_count", U32, h // shape["heads"]),
        ("llama.rope.freq_base", F32, 500000.0),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("llama.vocab_size", U32, vocab),
    ] + [(k, t, v) for k, (t, v) in donor_meta.items() if k.startswith("tokenizer.")]
    if "experts" in shape:
        meta += [("llama.expert_count", U32, shape["experts"]),
                 ("llama.expert_used_count", U32, shape["experts_used"])]
    pool = memoryview(random_pool(fmt))
    ones = struct.pack(f"<{h}f", *([1.0] * h))
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(GGUF_MAGIC + struct.pack("<IQQ", 3, len(tensors), len(meta)))
        for key, vtype, value in meta:
            f.write(pack_value(STR, key) + struct.pack("<I", vtype) + pack_value(vtype, value))
        offset = 0
        for name, ne, t in tensors:
            f.write(pack_value(STR, name) + struct.pack("<I", len(ne)))
            f.write(struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", GGML[t][0], offset))
            offset += -(-tensor_bytes(ne, t) // ALIGN) * ALIGN
        f.write(b"\0" * (-f.tell() % ALIGN))
        rotate = 0
        for name, ne, t in tensors:
            n = tensor_bytes(ne, t)
            if t == "f32" and len(ne) == 1:
                f.write(ones)
            elif t == "f32":
                # A router: random logits, so that tokens spread over the experts.
                f.write(struct.pack(f"<{math.prod(ne)}f", *(x / 127.5 - 1 for x in os.urandom(math.prod(ne)))))
            else:
                rotate = (rotate + 7919 * GGML[t][1]) % len(pool)
                written = 0
                while written < n:
                    start = (rotate + written) % len(pool)
                    chunk = pool[start:start + min(n - written, len(pool) - start)]
                    f.write(chunk)
                    written += len(chunk)
            f.write(b"\0" * (-n % ALIGN))
    os.replace(tmp, path)


# ------------------------------------------------------------- running ------

def run(cmd, what):
    """Run `cmd`; returns (stdout, stderr, seconds, peak RSS bytes). Raises on failure."""
    out_path, err_path = os.path.join(OUT_DIR, "last.out"), os.path.join(OUT_DIR, "last.err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t = time.perf_counter()
        try:
            p = subprocess.Popen(cmd, stdout=out, stderr=err)
        except OSError as e:
            raise BenchError(f"{what}: cannot start {cmd[0]}: {e}") from e
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        secs = time.perf_counter() - t
    stdout = open(out_path, encoding="utf-8", errors="replace").read()
    stderr = open(err_path, encoding="utf-8", errors="replace").read()
    if p.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-15:])
        raise BenchError(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{tail}")
    return stdout, stderr, secs, usage.ru_maxrss * 1024


def cargo_build(args, what):
    if shutil.which("cargo") is None:
        raise BenchError(f"cargo is required to build {what} (or pass its path)")
    log(f"== cargo build --release {' '.join(args)}")
    r = subprocess.run(["cargo", "build", "--release", *args], cwd=REPO)
    if r.returncode != 0:
        raise BenchError(f"building {what} failed")


def bandwidth(threads, mib):
    src = os.path.join(REPO, "scripts", "membw.c")
    exe = os.path.join(OUT_DIR, "membw")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        cc = os.environ.get("CC", "cc")
        if shutil.which(cc) is None:
            raise BenchError(f"a C compiler ({cc}) is required for the bandwidth probe scripts/membw.c")
        r = subprocess.run([cc, "-O3", "-march=native", "-pthread", src, "-o", exe], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"compiling {src} failed:\n{r.stderr}")
    out, _, _, _ = run([exe, str(mib), str(threads), "7"], "bandwidth probe")
    return json.loads(out)["median_gb_s"]


class CpuMeter:
    """Cores that other processes kept busy (steal time included) while the
    benchmark ran: all busy CPU time in /proc/stat minus this script's children."""

    @staticmethod
    def sample():
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
        ours = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        return time.perf_counter(), busy, ours.ru_utime + ours.ru_stime

    def __enter__(self):
        self.start = self.sample() if os.path.exists("/proc/stat") else None
        return self

    def __exit__(self, *exc):
        self.others = None
        if self.start is not None:
            end = self.sample()
            t, busy, ours = (e - s for e, s in zip(end, self.start))
            self.others = max(0.0, (busy - ours) / t) if t > 0 else None


def median(xs):
    return statistics.median(xs) if xs else None


def bench_kiln(exe, model, a):
    cmd = [exe, "--model", model, "--threads", str(a.threads), "--prompt", str(a.prompt),
           "--gen", str(a.gen), "--batches", ",".join(["1"] * a.reps),
           "--max-model-len", str(a.prompt + a.gen + 64)]
    out, err, secs, rss = run(cmd, f"Kiln on {model}")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    load = next((float(line.split()[2]) for line in err.splitlines() if line.startswith("loaded in ")), None)
    if len(rows) != a.reps or load is None:
        raise BenchError(f"unexpected output from {' '.join(cmd)}:\n{out}\n{err[-2000:]}")
    return {
        "prefill_tok_s": median([r["prefill_tok_s"] for r in rows]),
        "decode_tok_s": median([r["decode_tok_s"] for r in rows]),
        "prefill_runs": [r["prefill_tok_s"] for r in rows],
        "decode_runs": [r["decode_tok_s"] for r in rows],
        "load_s": load,
        "peak_rss_bytes": rss,
        "wall_s": round(secs, 1),
        "device": rows[0].get("device"),
    }


def bench_llamacpp(exe, model, a):
    common = [exe, "-m", model, "-t", str(a.threads), "-r", str(a.reps), "-o", "json", *a.llamacpp_args.split()]
    res = {}
    for key, extra in (("prefill", ["-p", str(a.prompt), "-n", "0"]),
                       ("decode", ["-p", "0", "-n", str(a.gen), "-d", str(a.prompt)])):
        out, _, _, _ = run(common + extra, f"llama-bench on {model}")
        try:
            test = json.loads(out)[0]
            samples = [float(x) for x in test["samples_ts"]]
        except (ValueError, LookupError, TypeError) as e:
            raise BenchError(f"unexpected llama-bench output ({e}):\n{out[:2000]}") from e
        res[f"{key}_tok_s"] = median(samples)
        res[f"{key}_runs"] = samples
        res["build"] = test.get("build_commit")
    return res


def ratio(a, b):
    return a / b if a and b else None


def fmt_num(x, digits=1, unit=""):
    return "–" if x is None else f"{x:.{digits}f}{unit}"


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return (rev or "unknown") + ("+changes" if rev and dirty else "")


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def markdown(report):
    s = report["settings"]
    lines = [
        f"CPU: {report['machine']['cpu']}, {s['threads']} threads; read bandwidth "
        f"{report['bandwidth_gb_s']:.1f} GB/s (probe before/after: "
        f"{report['bandwidth_runs_gb_s'][0]:.1f}/{report['bandwidth_runs_gb_s'][1]:.1f}); {report['date']}.",
        f"Kiln {report['kiln_rev']}; llama.cpp "
        + (f"{LLAMACPP_VERSION} (build {report['llamacpp_build']}"
           + (f", llama-bench {s['llamacpp_args']}" if s["llamacpp_args"] else "") + ")" if s["llamacpp"] else
           "NOT RUN (--no-llamacpp): Kiln figures only")
        + f". Prefill: {s['prompt']}-token prompt; decode: {s['gen']} tokens after it; median of {s['reps']}.",
        "Roofline = bandwidth / weight bytes read per decoded token (the KV cache is not counted). "
        "Other load: cores kept busy by other processes during the Kiln / llama.cpp runs.",
    ]
    others = [e["others_cpu_cores"] for r in report["rows"] for e in (r["kiln"], r["llamacpp"])
              if e and e.get("others_cpu_cores") is not None]
    if others and max(others) > 0.2:
        lines.append(f"WARNING: other processes kept up to {max(others):.1f} cores busy during the runs: "
                     "the figures are noisy, and contention does not slow both engines alike.")
    lines += [
        "",
        "| model | format | params | weights/token | prefill Kiln | prefill llama.cpp | ratio | decode Kiln "
        "| decode llama.cpp | ratio | roofline | Kiln % | llama.cpp % | Kiln load | Kiln peak RSS | other load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        k, l = r["kiln"], r.get("llamacpp") or {}
        lines.append(
            f"| {r['model']} | {r['format']} | {r['params'] / 1e9:.2f}B | {r['bytes_per_token'] / 2**20:.0f} MiB "
            f"| {fmt_num(k['prefill_tok_s'])} | {fmt_num(l.get('prefill_tok_s'))} "
            f"| {fmt_num(r['prefill_ratio'], 2, '×')} | {fmt_num(k['decode_tok_s'])} | {fmt_num(l.get('decode_tok_s'))} "
            f"| {fmt_num(r['decode_ratio'], 2, '×')} | {fmt_num(r['roofline_tok_s'])} | {fmt_num(r['kiln_roofline_pct'], 0, '%')} "
            f"| {fmt_num(r.get('llamacpp_roofline_pct'), 0, '%')} | {k['load_s']:.1f} s | {k['peak_rss_bytes'] / 2**30:.2f} GiB "
            f"| {fmt_num(k.get('others_cpu_cores'))} / {fmt_num(l.get('others_cpu_cores'))} |")
    lines.append("")
    lines.append("tok/s throughout; ratio = Kiln / llama.cpp (above 1: Kiln faster).")
    return "\n".join(lines)


# ---------------------------------------------------------------- main ------

def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="defaults for a quick check: 0.5B Q4_0, no real model, a 64-token prompt, "
                        "8 tokens, 1 run, 512 MiB probe (flags given explicitly still apply)")
    p.add_argument("--sizes", help=f"of {','.join(SIZES)} (default: all)")
    p.add_argument("--formats", help=f"of {','.join(FORMATS)} (default: {','.join(DEFAULT_FORMATS)})")
    p.add_argument("--no-real", action="store_true", default=None, help=f"leave out the real {REAL[1]}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, help="prompt tokens; also the decode depth (512)")
    p.add_argument("--gen", type=int, help="decoded tokens per run (64)")
    p.add_argument("--reps", type=int, help="runs per figure; the median is reported (3)")
    p.add_argument("--bw-mib", type=int, help="bandwidth probe buffer in MiB (2048)")
    p.add_argument("--no-llamacpp", action="store_true", help="run Kiln alone (said so in the output)")
    p.add_argument("--llamacpp-bin", help="directory with llama-bench and llama-quantize "
                   f"(default: target/peers/llama.cpp-{LLAMACPP_VERSION}/build/bin from scripts/build_llamacpp.sh)")
    p.add_argument("--llamacpp-args", default="", metavar="ARGS",
                   help="more llama-bench flags, space-separated (e.g. '--poll 0')")
    p.add_argument("--kiln-bench", help="bench_offline binary (default: built with cargo)")
    p.add_argument("--kiln", help="kiln binary, for `kiln pull` (default: target/release/kiln, built when absent)")
    p.add_argument("--models-dir", default=os.path.join(REPO, "target", "bench-models"))
    p.add_argument("--out-dir", default=os.path.join(REPO, "target", "bench-matrix"))
    p.add_argument("--evict", action="store_true", help="delete each generated model after its row")
    p.add_argument("--json", metavar="PATH",
                   help="also write the results as JSON; '-': JSON on stdout, the table on stderr")
    a = p.parse_args()
    defaults = dict(sizes=",".join(SIZES), formats=",".join(DEFAULT_FORMATS), no_real=False,
                    prompt=512, gen=64, reps=3, bw_mib=2048)
    if a.smoke:
        defaults.update(sizes="0.5b", formats="q4_0", no_real=True, prompt=64, gen=8, reps=1, bw_mib=512)
    for key, value in defaults.items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    a.sizes = [s.strip().lower() for s in a.sizes.split(",") if s.strip()]
    a.formats = [f.strip().lower() for f in a.formats.split(",") if f.strip()]
    for s in a.sizes:
        if s not in SIZES:
            p.error(f"unknown size {s!r}; sizes: {', '.join(SIZES)}")
    for f in a.formats:
        if f not in FORMATS:
            p.error(f"unknown format {f!r}; formats: {', '.join(FORMATS)}")
    if min(a.threads, a.prompt, a.gen, a.reps, a.bw_mib) < 1:
        p.error("--threads, --prompt, --gen, --reps and --bw-mib must be positive")
    return a


def main():
    global OUT_DIR
    a = parse_args()
    OUT_DIR = os.path.abspath(a.out_dir)
    os.makedirs(OUT_DIR, exist_ok=True)
    os.makedirs(a.models_dir, exist_ok=True)

    bin_dir = a.llamacpp_bin or os.path.join(REPO, "target", "peers", f"llama.cpp-{LLAMACPP_VERSION}", "build", "bin")
    llama_bench, quantize = os.path.join(bin_dir, "llama-bench"), os.path.join(bin_dir, "llama-quantize")
    missing = ("no {}: run `bash scripts/build_llamacpp.sh` (about 8 minutes once) or pass --llamacpp-bin DIR"
               + ("" if a.no_llamacpp else "; --no-llamacpp runs Kiln alone"))
    if a.no_llamacpp:
        llama_bench = None
        log("== llama.cpp: NOT RUN (--no-llamacpp); Kiln figures only")
    else:
        for tool in (llama_bench, quantize):
            if not os.access(tool, os.X_OK):
                raise BenchError(missing.format(tool))

    kiln = a.kiln or os.path.join(REPO, "target", "release", "kiln")
    if a.kiln is None and not os.access(kiln, os.X_OK):
        cargo_build(["--workspace", "--bin", "kiln"], "kiln")
    if not os.access(kiln, os.X_OK):
        raise BenchError(f"no kiln binary at {kiln}")
    exe = a.kiln_bench
    if exe is None:
        # --workspace: the feature set of scripts/test.sh's build, so nothing is rebuilt.
        cargo_build(["--workspace", "--example", "bench_offline"], "Kiln's bench_offline example")
        exe = os.path.join(REPO, "target", "release", "examples", "bench_offline")
    if not os.access(exe, os.X_OK):
        raise BenchError(f"no Kiln benchmark binary at {exe}")

    def pull(name):
        out, _, _, _ = run([kiln, "pull", "--print-path", name], f"kiln pull {name}")
        path = out.strip().splitlines()[-1] if out.strip() else ""
        if not os.path.isfile(path):
            raise BenchError(f"`kiln pull --print-path {name}` printed no file: {out!r}")
        return path

    log(f"== tokenizer donor: {DONOR}")
    donor_meta, _ = read_gguf(pull(DONOR))
    if "tokenizer.ggml.tokens" not in donor_meta:
        raise BenchError(f"{DONOR}'s GGUF has no tokenizer.ggml.tokens")

    def generated(size, fmt):
        path = os.path.join(a.models_dir, f"random-llama-{size}-{fmt}.gguf")
        if os.path.exists(path):
            return path, False
        if fmt == "q4_k_m":
            if not os.access(quantize, os.X_OK):
                raise BenchError(missing.format(quantize) + " (it makes the Q4_K_M models)")
            f16, made = generated(size, "f16")
            log(f"== llama-quantize {os.path.basename(f16)} -> Q4_K_M")
            tmp = path + ".partial"
            run([quantize, f16, tmp, "Q4_K_M", str(a.threads)], "llama-quantize")
            os.replace(tmp, path)
            if made and ("f16" not in a.formats or a.evict):
                os.remove(f16)
        else:
            log(f"== writing {path}")
            t = time.perf_counter()
            write_random_gguf(path, size, fmt, donor_meta)
            log(f"   {os.path.getsize(path) / 2**30:.2f} GiB in {time.perf_counter() - t:.0f} s")
        return path, True

    jobs = [(f"random-llama-{s}", s, f) for s in a.sizes for f in a.formats]
    if not a.no_real:
        jobs.append((REAL[0], None, "q4_k_m"))

    def loadavg():
        try:
            with open("/proc/loadavg") as f:
                return " ".join(f.read().split()[:3])
        except OSError:
            return "?"

    load_start = loadavg()
    log(f"== bandwidth probe ({a.bw_mib} MiB, {a.threads} threads)")
    bw = [bandwidth(a.threads, a.bw_mib)]
    rows, build = [], None
    for label, size, fmt in jobs:
        path, made = (pull(REAL[1]), False) if size is None else generated(size, fmt)
        params, read = weight_stats(path)
        log(f"== {label} {fmt}: {path}")
        with CpuMeter() as m:
            k = bench_kiln(exe, path, a)
        k["others_cpu_cores"] = m.others
        log(f"   Kiln: prefill {k['prefill_tok_s']:.1f} tok/s, decode {k['decode_tok_s']:.1f} tok/s, "
            f"load {k['load_s']:.1f} s, peak RSS {k['peak_rss_bytes'] / 2**30:.2f} GiB")
        l = None
        if llama_bench:
            with CpuMeter() as m:
                l = bench_llamacpp(llama_bench, path, a)
            l["others_cpu_cores"] = m.others
            build = l.pop("build")
            log(f"   llama.cpp: prefill {l['prefill_tok_s']:.1f} tok/s, decode {l['decode_tok_s']:.1f} tok/s")
        rows.append({"model": label, "format": fmt.upper(), "path": path, "params": params,
                     "bytes_per_token": read, "kiln": k, "llamacpp": l})
        with open(os.path.join(OUT_DIR, "rows.partial.json"), "w") as f:
            json.dump(rows, f, indent=1)
        if made and a.evict:
            os.remove(path)
    bw.append(bandwidth(a.threads, a.bw_mib))
    peak_bw = max(bw)
    for r in rows:
        roof = peak_bw * 1e9 / r["bytes_per_token"]
        l = r["llamacpp"] or {}
        r["roofline_tok_s"] = roof
        r["kiln_roofline_pct"] = 100 * r["kiln"]["decode_tok_s"] / roof
        r["llamacpp_roofline_pct"] = 100 * l["decode_tok_s"] / roof if l else None
        r["prefill_ratio"] = ratio(r["kiln"]["prefill_tok_s"], l.get("prefill_tok_s"))
        r["decode_ratio"] = ratio(r["kiln"]["decode_tok_s"], l.get("decode_tok_s"))
        figures = [r["kiln"]["prefill_tok_s"], r["kiln"]["decode_tok_s"]]
        if l:
            figures += [l["prefill_tok_s"], l["decode_tok_s"]]
        if not all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in figures):
            raise BenchError(f"{r['model']} {r['format']}: a figure is missing or not positive: {figures}")

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"threads": a.threads, "prompt": a.prompt, "gen": a.gen, "reps": a.reps,
                     "smoke": a.smoke, "llamacpp": not a.no_llamacpp, "llamacpp_args": a.llamacpp_args},
        "machine": {"cpu": cpu_name(), "loadavg_start": load_start, "loadavg_end": loadavg()},
        "kiln_rev": git_rev(),
        "llamacpp_build": build,
        "bandwidth_gb_s": peak_bw,
        "bandwidth_runs_gb_s": bw,
        "rows": rows,
    }
    table = markdown(report)
    text = json.dumps(report, indent=1)
    for name, content in (("matrix.md", table), ("matrix.json", text)):
        with open(os.path.join(OUT_DIR, name), "w") as f:
            f.write(content + "\n")
    if a.json == "-":
        log(table)
        print(text)
    else:
        print(table)
        if a.json:
            with open(a.json, "w") as f:
                f.write(text + "\n")


OUT_DIR = None

if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"bench_matrix: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)

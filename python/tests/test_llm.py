"""vLLM's offline API on Kiln: `LLM.generate`, `LLM.chat`, streaming, the
tokenizer, errors, and the `kiln` console script, against the installed wheel."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import kiln
from kiln import LLM, SamplingParams

PROMPT = "The capital of France is"


def kiln_command():
    path = shutil.which("kiln", path=os.path.dirname(sys.executable))
    assert path, "the wheel did not install the `kiln` console script"
    return path


def test_console_script_prints_the_version():
    out = subprocess.run([kiln_command(), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"kiln {kiln.__version__}"


def test_console_script_serves(tmp_path):
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(
        [kiln_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "512",
         "--kv-cache-memory-bytes", "64MiB", "--shutdown-timeout", "5s"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "kiln serve from the wheel did not become healthy"
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
            assert json.load(r)["data"][0]["id"] == "smollm2-135m-instruct"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/", timeout=10) as r:
            assert b"Kiln playground" in r.read()
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        log.close()


def test_greedy_generate_equals_kiln_generate(llm):
    params = SamplingParams(temperature=0, max_tokens=32)
    ours = llm.generate([PROMPT], params, use_tqdm=False)[0].outputs[0]
    cli = subprocess.run(
        [kiln_command(), "generate", "--quiet", "--prompt", PROMPT,
         "--temperature", "0", "--max-tokens", "32", "--max-model-len", "2048",
         "--log-level", "warn"],
        capture_output=True, text=True, check=True,
    )
    line = json.loads(cli.stdout.strip().splitlines()[0])
    assert ours.token_ids == line["outputs"][0]["token_ids"]
    assert ours.text == line["outputs"][0]["text"]
    assert len(ours.token_ids) > 0


def test_outputs_have_vllm_fields(llm):
    [out] = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)
    assert out.prompt == PROMPT
    assert out.finished
    assert out.prompt_token_ids == llm.get_tokenizer().encode(PROMPT)
    c = out.outputs[0]
    assert c.index == 0
    assert c.finish_reason == "length"
    assert len(c.token_ids) == 4
    assert c.cumulative_logprob is None and c.logprobs is None


def test_default_max_tokens_is_vllms_16(llm):
    [out] = llm.generate(PROMPT, SamplingParams(temperature=0, ignore_eos=True), use_tqdm=False)
    assert len(out.outputs[0].token_ids) == 16


def test_n2_with_a_seed_is_reproducible(llm):
    params = SamplingParams(n=2, temperature=1.0, seed=1234, max_tokens=24)
    first = llm.generate(["Write a short poem about the sea."], params, use_tqdm=False)[0]
    again = llm.generate(["Write a short poem about the sea."], params, use_tqdm=False)[0]
    assert [o.token_ids for o in first.outputs] == [o.token_ids for o in again.outputs]
    assert len(first.outputs) == 2
    assert first.outputs[0].token_ids != first.outputs[1].token_ids


def test_chat_applies_the_template(llm):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    [out] = llm.chat(messages, SamplingParams(temperature=0, max_tokens=32), use_tqdm=False)
    assert "Paris" in out.outputs[0].text
    assert "<|im_start|>" in out.prompt  # SmolLM2's ChatML template


def test_chat_takes_a_list_of_conversations(llm):
    conversations = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "Answer in one word."},
         {"role": "user", "content": "What colour is the sky?"}],
    ]
    outs = llm.chat(conversations, SamplingParams(temperature=0, max_tokens=16), use_tqdm=False)
    assert len(outs) == 2 and "Paris" in outs[0].outputs[0].text


def test_prompt_shapes(llm):
    ids = llm.get_tokenizer().encode(PROMPT)
    params = SamplingParams(temperature=0, max_tokens=6)
    by_text, by_ids, by_dict, by_text_dict = llm.generate(
        [PROMPT, ids, {"prompt_token_ids": ids}, {"prompt": PROMPT}], params, use_tqdm=False)
    assert by_ids.prompt is None
    for other in (by_ids, by_dict, by_text_dict):
        assert other.outputs[0].token_ids == by_text.outputs[0].token_ids
    # A flat list of ints is one tokenized prompt.
    [single] = llm.generate(ids, params, use_tqdm=False)
    assert single.outputs[0].token_ids == by_text.outputs[0].token_ids


def test_one_sampling_params_per_prompt(llm):
    outs = llm.generate(["a", "b"], [SamplingParams(max_tokens=2, temperature=0, ignore_eos=True),
                                     SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)],
                        use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in outs] == [2, 5]
    with pytest.raises(ValueError, match="one per prompt"):
        llm.generate(["a", "b", "c"], [SamplingParams(), SamplingParams()], use_tqdm=False)


def test_logprobs(llm):
    [out] = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=5, logprobs=3), use_tqdm=False)
    c = out.outputs[0]
    assert len(c.logprobs) == 5
    for token, entry in zip(c.token_ids, c.logprobs):
        assert token in entry
        assert entry[token].rank == 1  # greedy picks the most likely token
        assert len(entry) == 3
    assert c.cumulative_logprob == pytest.approx(sum(e[t].logprob for t, e in zip(c.token_ids, c.logprobs)), rel=1e-5)


def test_stop_strings_and_reason(llm):
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    [free] = llm.generate(PROMPT, params, use_tqdm=False)
    text = free.outputs[0].text
    stop = text[len(text) // 2:][:3]
    assert stop.strip(), text
    params.stop = [stop]
    [stopped] = llm.generate(PROMPT, params, use_tqdm=False)
    c = stopped.outputs[0]
    assert c.finish_reason == "stop" and c.stop_reason == stop
    assert c.text == text[: text.index(stop)]


def test_stream_yields_growing_text_then_finishes(llm):
    params = SamplingParams(temperature=0, max_tokens=12)
    views = list(llm.generate_stream(PROMPT, params))
    assert len(views) >= 2
    texts = [v.outputs[0].text for v in views]
    assert all(a == b[: len(a)] for a, b in zip(texts, texts[1:]))
    assert views[-1].finished and not views[0].finished
    [batch] = llm.generate(PROMPT, params, use_tqdm=False)
    assert views[-1].outputs[0].token_ids == batch.outputs[0].token_ids


def test_breaking_out_of_a_stream_aborts_it(llm):
    it = llm.generate_stream(PROMPT, SamplingParams(temperature=0, max_tokens=500, ignore_eos=True))
    next(it)
    it.close()
    assert list(it) == []
    # The engine still serves.
    assert llm.generate(PROMPT, SamplingParams(max_tokens=2), use_tqdm=False)[0].finished


def test_batching_beats_one_call_per_prompt(llm):
    prompts = [f"Write one sentence about the number {i}." for i in range(64)]
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    llm.generate(prompts[:4], params, use_tqdm=False)  # warm up
    start = time.perf_counter()
    batched = llm.generate(prompts, params, use_tqdm=False)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    single = [llm.generate(p, params, use_tqdm=False)[0] for p in prompts]
    single_s = time.perf_counter() - start
    print(f"64 prompts: one call {batched_s:.2f} s, 64 calls {single_s:.2f} s ({single_s / batched_s:.1f}x)")
    assert batched_s < single_s
    # Batch invariance: the same tokens either way.
    assert [o.outputs[0].token_ids for o in batched] == [o.outputs[0].token_ids for o in single]


def test_tokenizer_round_trip(llm):
    tok = llm.get_tokenizer()
    ids = tok.encode("Hello, world!", add_special_tokens=False)
    assert tok.decode(ids) == "Hello, world!"
    rendered = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert "Hi" in rendered
    assert tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=True) == tok.encode(rendered, add_special_tokens=False)
    assert tok.vocab_size == len(tok) > 1000


def test_model_info(llm):
    info = llm.model_info()
    assert info["architecture"] and info["max_model_len"] == 2048


# --- errors -----------------------------------------------------------------

def test_bad_sampling_params_raise_value_error():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="min_tokens"):
        SamplingParams(min_tokens=10, max_tokens=5)
    with pytest.raises(TypeError):
        SamplingParams(no_such_field=1)


def test_too_long_prompt_raises_with_the_engine_message(llm):
    with pytest.raises(ValueError, match="maximum context length is 2048 tokens"):
        llm.generate("word " * 3000, SamplingParams(max_tokens=4), use_tqdm=False)


def test_out_of_vocabulary_ids_raise(llm):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.generate([[10**9]], use_tqdm=False)


def test_bad_prompt_types_raise_type_error(llm):
    with pytest.raises(TypeError, match="prompt"):
        llm.generate(42, use_tqdm=False)
    with pytest.raises(TypeError):
        llm.chat("not a conversation", use_tqdm=False)


def test_unknown_engine_argument_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_model_length'"):
        LLM(max_model_length=4)


def test_bad_engine_value_is_a_value_error():
    with pytest.raises(ValueError, match="block-size"):
        LLM(block_size=3)


def test_missing_model_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        LLM(str(tmp_path / "nope.gguf"))


def test_unloadable_model_is_an_engine_error(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(kiln.EngineError, match="broken.gguf"):
        LLM(str(broken))


def test_ctrl_c_cancels_a_batch_cleanly():
    # A child process runs a long batch; SIGINT must raise KeyboardInterrupt
    # promptly, abort the requests, and leave the engine serving.
    # The child installs Python's own Ctrl-C handler: a shell that starts the
    # suite in the background hands its children SIGINT ignored, and Python
    # keeps an inherited SIG_IGN, so the signal would never arrive.
    script = textwrap.dedent(f"""
        import signal, sys, time, kiln
        signal.signal(signal.SIGINT, signal.default_int_handler)
        llm = kiln.LLM(**{dict(max_model_len=2048, kv_cache_memory_bytes=256 << 20)!r})
        print("ready", flush=True)
        params = kiln.SamplingParams(max_tokens=1500, ignore_eos=True)
        start = time.monotonic()
        try:
            llm.generate(["Tell me a story."] * 8, params, use_tqdm=False)
            print("not interrupted", flush=True)
        except KeyboardInterrupt:
            print(f"interrupted after {{time.monotonic() - start:.1f}}", flush=True)
        out = llm.generate("Hi", kiln.SamplingParams(max_tokens=2), use_tqdm=False)
        print("after", out[0].finished, flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "KILN_LOG_LEVEL": "warn"})
    assert child.stdout.readline().strip() == "ready"
    time.sleep(2.0)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=60)
    lines = out.strip().splitlines()
    assert lines[0].startswith("interrupted after"), lines
    assert float(lines[0].split()[-1]) < 10
    assert lines[-1] == "after True"


def test_structured_outputs(llm):
    from kiln import StructuredOutputsParams

    choice = SamplingParams(temperature=0, max_tokens=8,
                            structured_outputs=StructuredOutputsParams(choice=["yes", "no"]))
    [out] = llm.generate("Is the sky blue? Answer:", choice, use_tqdm=False)
    assert out.outputs[0].text in ("yes", "no")
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
              "required": ["city"], "additionalProperties": False}
    params = SamplingParams(temperature=0, max_tokens=48, structured_outputs=StructuredOutputsParams(json=schema))
    [out] = llm.chat([{"role": "user", "content": "Which city is the capital of France? Answer in JSON."}],
                     params, use_tqdm=False)
    answer = json.loads(out.outputs[0].text)
    assert set(answer) == {"city"} and isinstance(answer["city"], str)
    with pytest.raises(ValueError, match="only one of"):
        StructuredOutputsParams(regex="a+", choice=["a"])

"""Raw HTTP checks of each dialect's errors (status and JSON shape), the API
key, and a healthy server afterwards.

Shapes: OpenAI/vLLM `{"error":{"message","type","param","code":<int>}}`;
TGI `{"error":"...","error_type":"..."}`; Ollama `{"error":"..."}`.
"""

import threading
import time

import httpx
import openai
import pytest

from support import API_KEY, CAPITAL, MAX_MODEL_LEN, SERVED_NAME, Metrics, tokenize

LONG = "hello " * 3000  # about 3000 tokens, over the 2048 context


def post(url, path, body, headers=None):
    headers = dict(headers or {})
    if isinstance(body, str):
        headers.setdefault("content-type", "application/json")
        return httpx.post(url + path, content=body, headers=headers, timeout=30)
    return httpx.post(url + path, json=body, headers=headers, timeout=30)


def openai_error(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert {"message", "type", "param", "code"} <= err.keys(), err
    assert err["code"] == status and isinstance(err["message"], str) and err["message"]
    return err


def tgi_error(r, status, error_type):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body["error"], str) and body["error"] and body["error_type"] == error_type, body
    return body


def ollama_error(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"], body
    return body


def names_both_numbers(message: str, prompt_tokens: int) -> None:
    assert str(MAX_MODEL_LEN) in message and str(prompt_tokens) in message, message


# ---- OpenAI / vLLM -------------------------------------------------------------


def test_openai_bad_json(base_url):
    for path in ("/v1/chat/completions", "/v1/completions", "/tokenize"):
        openai_error(post(base_url, path, "{not json"), 400)


def test_openai_validation(base_url):
    err = openai_error(post(base_url, "/v1/chat/completions", {"messages": CAPITAL, "max_tokens": "ten"}), 400)
    assert "max_tokens" in err["message"] or err["param"] == "max_tokens"
    err = openai_error(post(base_url, "/v1/chat/completions", {"model": SERVED_NAME}), 400)
    assert "messages" in err["message"]
    openai_error(post(base_url, "/v1/completions", {"prompt": "hi", "temperature": -1}), 400)
    err = openai_error(post(base_url, "/v1/completions", {"prompt": "hi", "max_tokens": 2, "stream_options": {"include_usage": True}}), 400)
    assert err["param"] == "stream_options"
    r = httpx.post(base_url + "/v1/completions", content='{"prompt":"hi"}', headers={"content-type": "text/plain"}, timeout=30)
    openai_error(r, 400)


def test_openai_prompt_too_long(base_url):
    n = len(tokenize(base_url, LONG))
    err = openai_error(post(base_url, "/v1/completions", {"prompt": LONG, "max_tokens": 4}), 400)
    names_both_numbers(err["message"], n)
    err = openai_error(post(base_url, "/v1/chat/completions", {"messages": [{"role": "user", "content": LONG}], "max_tokens": 4}), 400)
    assert str(MAX_MODEL_LEN) in err["message"]
    # The prompt plus max_tokens over the context is just as much an error.
    err = openai_error(post(base_url, "/v1/completions", {"prompt": "hi", "max_tokens": 4000}), 400)
    assert str(MAX_MODEL_LEN) in err["message"] and "4000" in err["message"]


# ---- TGI -------------------------------------------------------------------------


def test_tgi_bad_json(base_url):
    for path in ("/generate", "/generate_stream", "/"):
        r = post(base_url, path, "{not json")
        assert r.status_code in (400, 422), (path, r.text)
        tgi_error(r, r.status_code, "validation")


def test_tgi_validation(base_url):
    for path in ("/generate", "/"):
        n = len(tokenize(base_url, LONG))
        body = tgi_error(post(base_url, path, {"inputs": LONG, "parameters": {"max_new_tokens": 4}}), 422, "validation")
        names_both_numbers(body["error"], n)
    tgi_error(post(base_url, "/generate", {"inputs": "", "parameters": {"max_new_tokens": 4}}), 422, "validation")
    tgi_error(post(base_url, "/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 0}}), 422, "validation")
    tgi_error(post(base_url, "/generate", {"inputs": "hi", "parameters": {"temperature": 0.0}}), 422, "validation")
    tgi_error(post(base_url, "/generate", {"parameters": {}}), 422, "validation")


# ---- Ollama ------------------------------------------------------------------------


def test_ollama_bad_json(base_url):
    for path in ("/api/chat", "/api/generate", "/api/show"):
        ollama_error(post(base_url, path, "{not json"), 400)


def test_ollama_errors(base_url):
    n = len(tokenize(base_url, LONG))
    body = ollama_error(post(base_url, "/api/generate", {"model": SERVED_NAME, "prompt": LONG, "raw": True, "stream": False}), 400)
    names_both_numbers(body["error"], n)
    body = ollama_error(post(base_url, "/api/chat", {"model": "no-such-model", "messages": CAPITAL, "stream": False}), 404)
    assert "no-such-model" in body["error"]
    ollama_error(post(base_url, "/api/show", {"model": "no-such-model"}), 404)
    ollama_error(post(base_url, "/api/chat", {"messages": CAPITAL, "stream": False}), 400)


# ---- routes, methods, limits ----------------------------------------------------------


def test_unknown_route_and_method(base_url):
    r = httpx.get(base_url + "/v1/nothing-here", timeout=10)
    openai_error(r, 404)
    r = httpx.post(base_url + "/api/nothing-here", json={}, timeout=10)
    ollama_error(r, 404)
    r = httpx.get(base_url + "/nothing-here", timeout=10)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json") and "error" in r.json()
    r = httpx.get(base_url + "/v1/chat/completions", timeout=10)
    assert r.status_code == 405 and "error" in r.json()


def test_body_too_large(base_url):
    r = post(base_url, "/v1/completions", '{"prompt":"' + "a" * (17 * 1024 * 1024) + '"}')
    assert r.status_code == 413 and "error" in r.json()


def test_server_is_healthy_afterwards(base_url):
    assert httpx.get(base_url + "/health", timeout=10).status_code == 200
    r = post(base_url, "/v1/chat/completions", {"messages": CAPITAL, "temperature": 0, "max_tokens": 20})
    assert r.status_code == 200 and "Paris" in r.json()["choices"][0]["message"]["content"]


# ---- API key -----------------------------------------------------------------------


class TestApiKey:
    DIALECTS = [
        ("/v1/chat/completions", {"messages": CAPITAL, "max_tokens": 2}),
        ("/v1/completions", {"prompt": "Hi", "max_tokens": 2}),
        ("/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 2}}),
        ("/", {"inputs": "hi", "parameters": {"max_new_tokens": 2}}),
        ("/api/chat", {"model": SERVED_NAME, "messages": CAPITAL, "stream": False, "options": {"num_predict": 2}}),
        ("/api/generate", {"model": SERVED_NAME, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}),
    ]
    WRONG = [{}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {API_KEY}x"}, {"authorization": API_KEY}]

    def test_missing_or_wrong_key_is_401_in_each_dialect(self, auth_server):
        url = auth_server.url
        for path, body in self.DIALECTS:
            for headers in self.WRONG:
                r = post(url, path, body, headers=headers)
                if path.startswith("/v1/"):
                    openai_error(r, 401)
                elif path.startswith("/api/"):
                    ollama_error(r, 401)
                else:
                    assert r.status_code == 401 and isinstance(r.json()["error"], str), r.text
        for path in ("/v1/models", "/api/tags", "/info"):
            assert httpx.get(url + path, timeout=10).status_code == 401, path

    def test_right_key_passes_in_each_dialect(self, auth_server):
        url = auth_server.url
        for path, body in self.DIALECTS:
            r = post(url, path, body, headers={"authorization": f"Bearer {API_KEY}"})
            assert r.status_code == 200, (path, r.text)

    def test_health_and_metrics_need_no_key(self, auth_server):
        assert httpx.get(auth_server.url + "/health", timeout=10).status_code == 200
        r = httpx.get(auth_server.url + "/metrics", timeout=10)
        assert r.status_code == 200 and "vllm:num_requests_running" in r.text

    def test_official_clients_with_the_key(self, auth_server):
        import ollama
        from huggingface_hub import InferenceClient
        from text_generation import Client

        url = auth_server.url
        c = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0)
        r = c.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20)
        assert "Paris" in r.choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()

        tgi = Client(url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
        assert tgi.generate("The capital of France is", max_new_tokens=3).generated_text.startswith(" Paris")

        hf = InferenceClient(model=url, token=API_KEY, timeout=60)
        assert "Paris" in hf.chat_completion(CAPITAL, max_tokens=20, temperature=0).choices[0].message.content

        ol = ollama.Client(host=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
        assert "Paris" in ol.chat(model=SERVED_NAME, messages=CAPITAL, options={"temperature": 0}).message.content
        with pytest.raises(ollama.ResponseError) as e:
            ollama.Client(host=url, timeout=60).list()
        assert e.value.status_code == 401


# ---- overload: HTTP 429 with Retry-After, typed errors in each client -----------


def test_overload_is_429_in_each_dialect(kiln_factory):
    import ollama
    from text_generation import Client
    from text_generation.errors import OverloadedError

    s = kiln_factory("kiln-serve-overload", "--max-num-seqs", "1", "--max-waiting-requests", "1")
    url = s.url

    def occupy():  # one of these runs, the other waits; both are cut off by the kill below
        try:
            httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 1500, "ignore_eos": True}, timeout=120)
        except httpx.HTTPError:
            pass

    def wait_for(running, waiting):
        deadline = time.monotonic() + 30
        while True:
            m = Metrics(url)
            if (m.value("vllm:num_requests_running"), m.value("vllm:num_requests_waiting")) == (running, waiting):
                return
            assert time.monotonic() < deadline, f"expected {running} running and {waiting} waiting"
            time.sleep(0.05)

    # One at a time: the first must be running before the second arrives.
    occupiers = [threading.Thread(target=occupy) for _ in range(2)]
    occupiers[0].start()
    wait_for(1, 0)
    occupiers[1].start()
    wait_for(1, 1)
    try:
        r = post(url, "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
        openai_error(r, 429)
        assert int(r.headers["retry-after"]) >= 1
        tgi_error(post(url, "/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 2}}), 429, "overloaded")
        ollama_error(post(url, "/api/generate", {"model": SERVED_NAME, "prompt": "Hi", "stream": False}), 429)

        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0).chat.completions.create(
                model=SERVED_NAME, messages=CAPITAL, max_tokens=2
            )
        with pytest.raises(OverloadedError):
            Client(url, timeout=10).generate("Hi", max_new_tokens=2)
        with pytest.raises(ollama.ResponseError) as e:
            ollama.Client(host=url, timeout=10).chat(model=SERVED_NAME, messages=CAPITAL)
        assert e.value.status_code == 429
    finally:
        s.kill()
        for t in occupiers:
            t.join(timeout=30)

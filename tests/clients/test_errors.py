"""Raw HTTP checks: each dialect's error shape and status, auth, health afterwards."""

import httpx
import pytest

from conftest import API_KEY, CAPITAL, SERVED_NAME

LONG = "hello " * 3000


def post(url, path, body, **kw):
    if isinstance(body, str):
        return httpx.post(url + path, content=body, headers={"content-type": "application/json"}, timeout=30, **kw)
    return httpx.post(url + path, json=body, timeout=30, **kw)


def test_openai_shape(base_url):
    r = post(base_url, "/v1/chat/completions", "{not json")
    assert r.status_code == 400
    err = r.json()["error"]
    assert {"message", "type", "code"} <= err.keys()
    r = post(base_url, "/v1/completions", {"prompt": LONG, "max_tokens": 4})
    assert r.status_code == 400 and "2048" in r.json()["error"]["message"]
    r = post(base_url, "/v1/chat/completions", {"messages": CAPITAL, "max_tokens": "ten"})
    assert r.status_code == 400
    r = post(base_url, "/v1/completions", {"prompt": "hi", "suffix": "x"})
    assert r.status_code == 400 and "suffix" in r.json()["error"]["message"]


def test_tgi_shape(base_url):
    r = post(base_url, "/generate", "{not json")
    assert r.status_code in (400, 422)
    assert "error" in r.json()
    r = post(base_url, "/generate", {"inputs": LONG, "parameters": {"max_new_tokens": 4}})
    assert r.status_code == 422
    body = r.json()
    assert body["error_type"] == "validation" and "2048" in body["error"]


def test_ollama_shape(base_url):
    r = post(base_url, "/api/chat", "{not json")
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = post(base_url, "/api/generate", {"model": SERVED_NAME, "prompt": LONG, "stream": False})
    assert r.status_code == 400 and "2048" in r.json()["error"]


def test_unknown_route_and_method(base_url):
    r = httpx.get(base_url + "/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
    assert httpx.get(base_url + "/v1/chat/completions").status_code == 405


def test_body_too_large(base_url):
    r = post(base_url, "/v1/completions", '{"prompt":"' + "a" * (17 * 1024 * 1024) + '"}')
    assert r.status_code == 413


def test_server_is_healthy_afterwards(base_url):
    assert httpx.get(base_url + "/health").status_code == 200
    r = post(base_url, "/v1/chat/completions", {"messages": CAPITAL, "temperature": 0, "max_tokens": 12})
    assert "Paris" in r.json()["choices"][0]["message"]["content"]


class TestApiKey:
    def test_missing_or_wrong_key_is_401_in_each_dialect(self, auth_server):
        url = auth_server.url
        for path, body in [
            ("/v1/chat/completions", {"messages": CAPITAL}),
            ("/generate", {"inputs": "hi"}),
            ("/api/chat", {"model": SERVED_NAME, "messages": CAPITAL}),
        ]:
            assert post(url, path, body).status_code == 401
            assert post(url, path, body, headers={"authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(url + "/v1/models").status_code == 401

    def test_right_key_passes_and_health_metrics_stay_open(self, auth_server):
        from openai import OpenAI

        url = auth_server.url
        c = OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0)
        r = c.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=12)
        assert "Paris" in r.choices[0].message.content
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/metrics").status_code == 200
        with pytest.raises(Exception):
            OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()

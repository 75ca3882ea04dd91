"""The official `ollama` client (0.6.3) managing Kiln's model cache:
`pull`, `list`, `copy` and `delete`.

The server runs with an empty cache of its own and HF_ENDPOINT pointing at a
small local imitation of the Hugging Face hub (file listing and `resolve`
downloads), so pulls are real downloads that never leave the machine. The
repository it serves holds one 3 MiB file named like a GGUF file: pulling
only stores files, it never loads them.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ollama
import pytest

from conftest import KilnServer
from support import CAPITAL, SERVED_NAME

REPO = "kiln-test/tiny-gguf"
FILE = "tiny.gguf"
CONTENT = bytes(range(256)) * (3 * 4096)  # 3 MiB
PULLED = f"{REPO}:{FILE}"  # how the cache names the fetched file


class FakeHub(BaseHTTPRequestHandler):
    """The two hub URLs Kiln uses, for one repository; 404 for anything else."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        info = f"/api/models/{REPO}/revision/main"
        if self.path.split("?")[0] == info:
            sha = hashlib.sha256(CONTENT).hexdigest()
            body = json.dumps({"sha": "0" * 40, "siblings": [
                {"rfilename": FILE, "size": len(CONTENT), "lfs": {"sha256": sha, "size": len(CONTENT)}},
            ]}).encode()
            return self._send(200, body, "application/json")
        if self.path == f"/{REPO}/resolve/main/{FILE}":
            return self._send(200, CONTENT, "application/octet-stream")
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub_url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(hub_url):
    s = KilnServer("kiln-serve-models", env={"HF_ENDPOINT": hub_url})
    yield s
    s.stop_and_check()


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.url, timeout=60)


def names(client) -> list[str]:
    return [m.model for m in client.list().models]


def test_pull_streams_progress_and_lists_the_model(client):
    parts = list(client.pull("hf.co/" + PULLED, stream=True))
    statuses = [p.status for p in parts]
    assert statuses[0] == "pulling manifest"
    assert statuses[-1] == "success"
    downloads = [p for p in parts if p.status == f"downloading {FILE}"]
    assert len(downloads) > 2, statuses
    assert all(p.total == len(CONTENT) for p in downloads)
    completed = [p.completed for p in downloads]
    assert completed == sorted(completed) and completed[-1] == len(CONTENT)
    assert downloads[-1].digest == "sha256:" + hashlib.sha256(CONTENT).hexdigest()
    assert "verifying sha256 digest" in statuses

    listed = {m.model: m for m in client.list().models}
    assert SERVED_NAME + ":latest" in listed
    pulled = listed[PULLED]
    assert pulled.size == len(CONTENT)
    assert pulled.digest and pulled.modified_at is not None
    assert pulled.details.format == "gguf"
    # Only the served model is loaded.
    assert [m.model for m in client.ps().models] == [SERVED_NAME + ":latest"]


def test_pull_again_without_streaming(client):
    client.pull(PULLED)  # already cached: checked against the hub, not fetched again
    r = client.pull(PULLED, stream=False)
    assert r.status == "success"


def test_pull_of_an_unknown_repository_is_a_404(client):
    with pytest.raises(ollama.ResponseError) as e:
        client.pull("kiln-test/no-such-repo")
    assert e.value.status_code == 404
    assert "kiln-test/no-such-repo" in e.value.error


def test_a_cached_model_that_is_not_loaded_says_how_to_serve_it(client):
    client.pull(PULLED)
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model=PULLED, messages=CAPITAL)
    assert e.value.status_code == 400
    assert "not loaded" in e.value.error and f"kiln serve {PULLED}" in e.value.error


def test_copy_of_the_served_model_is_served_and_listed(client):
    assert client.copy(SERVED_NAME, "my-smol").status == "success"
    assert "my-smol:latest" in names(client)
    r = client.chat(model="my-smol", messages=CAPITAL, options={"temperature": 0})
    assert "Paris" in r.message.content
    assert client.delete("my-smol").status == "success"
    assert "my-smol:latest" not in names(client)
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="my-smol", messages=CAPITAL)
    assert e.value.status_code == 404


def test_copy_and_delete_of_a_cached_model(client):
    client.pull(PULLED)
    assert client.copy(PULLED, "tiny-copy").status == "success"
    assert "tiny-copy:latest" in names(client)
    assert client.delete(PULLED).status == "success"
    listed = names(client)
    assert PULLED not in listed and "tiny-copy:latest" not in listed, listed
    with pytest.raises(ollama.ResponseError) as e:
        client.delete(PULLED)
    assert e.value.status_code == 404


def test_the_served_model_cannot_be_deleted(client):
    with pytest.raises(ollama.ResponseError) as e:
        client.delete(SERVED_NAME)
    assert e.value.status_code == 409
    assert "another model" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.copy("no-such-model", "x")
    assert e.value.status_code == 404

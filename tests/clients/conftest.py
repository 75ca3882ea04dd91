"""Starts a real `kiln serve` on the default model for the client tests.

The server listens on a free local port; its log goes to
target/client-tests/<name>.log and its tail is printed when it fails. At the
end of the session it gets SIGTERM and must exit 0 (graceful shutdown).
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
KILN = ROOT / "target" / "release" / "kiln"
LOG_DIR = ROOT / "target" / "client-tests"
SERVED_NAME = "smollm2-135m-instruct"
API_KEY = "test-key-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `kiln serve` process."""

    def __init__(self, name: str, extra: list[str]):
        model = os.environ.get("KILN_TEST_GGUF")
        if not model:
            pytest.fail("KILN_TEST_GGUF is not set (tests/clients/run.sh sets it)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        args = [
            str(KILN), "serve", model,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--served-model-name", SERVED_NAME,
            "--max-model-len", "2048",
            "--kv-cache-memory-bytes", "256MiB",
            "--threads", os.environ.get("KILN_TEST_THREADS", "2"),
            "--shutdown-timeout", "10s",
        ]
        if os.environ.get("KILN_TEST_FRONTENDS"):
            args += ["--frontend", os.environ["KILN_TEST_FRONTENDS"]]
        args += extra
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_healthy()

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_healthy(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"kiln serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.proc.kill()
        pytest.fail(f"kiln serve did not become healthy in {timeout}s:\n{self.tail()}")

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed after 30 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def server():
    s = Server("kiln-serve", [])
    yield s
    code = s.stop()
    assert code == 0, f"kiln serve exited with {code} after SIGTERM:\n{s.tail()}"


@pytest.fixture(scope="session")
def base_url(server) -> str:
    return server.url


@pytest.fixture(scope="module")
def auth_server():
    s = Server("kiln-serve-auth", ["--api-key", API_KEY])
    yield s
    assert s.stop() == 0, s.tail()


@pytest.fixture(autouse=True)
def server_log_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "server" in request.fixturenames:
        print("---- kiln serve log (tail) ----")
        print(request.getfixturevalue("server").tail(15))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


def metrics(url: str) -> dict:
    """Samples of /metrics by (name, frozenset(labels)) parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: dict, name: str, **labels) -> float:
    labels.setdefault("model_name", SERVED_NAME)
    return samples[(name, frozenset(labels.items()))]

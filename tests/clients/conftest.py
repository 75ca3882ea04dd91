"""Starts a real `kiln serve` for the client suite.

One server (session scope) serves every module; the API-key tests start a
second one with `--api-key`, the embedding tests one serving the embedding
model, and the shutdown tests start their own. Each
server listens on a free local port and logs (stdout and stderr) to
target/client-tests/<name>.log; the tail of every running server's log is
attached to a failing test's report. At the end each server gets SIGTERM and
must exit 0 within its shutdown timeout: the graceful-shutdown check.

Environment:
  KILN_TEST_GGUF       the model file (required; run.sh sets it)
  KILN_TEST_QWEN_GGUF, KILN_TEST_GEMMA_GGUF  Qwen2.5-Coder 0.5B and Gemma 3
                       270M Q4_K_M, served by test_families.py (run.sh sets them)
  KILN_TEST_EMBEDDING_MODEL  the embedding model directory (all-MiniLM-L6-v2;
                       run.sh sets it)
  KILN_TEST_FRONTENDS  passed as --frontend when set (default: all frontends)
  KILN_TEST_THREADS    --threads (default 2)
  KILN_BIN             the binary (default target/release/kiln)

Every server runs with KILN_CACHE set to an empty directory of its own
(target/client-tests/cache-<name>), so what the Ollama routes list and
change is the suite's, never the user's cache.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from support import API_KEY, EMBEDDING_NAME, SERVED_NAME, SHUTDOWN_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]
KILN = Path(os.environ.get("KILN_BIN", ROOT / "target" / "release" / "kiln"))
LOG_DIR = ROOT / "target" / "client-tests"
START_TIMEOUT_S = 120.0

_running: list["KilnServer"] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KilnServer:
    """One `kiln serve` child process on 127.0.0.1."""

    def __init__(self, name: str, *extra: str, model_env: str = "KILN_TEST_GGUF",
                 served_name: str = SERVED_NAME, max_model_len: int | None = 2048,
                 env: dict[str, str] | None = None):
        model = os.environ.get(model_env)
        if not model:
            pytest.fail(f"{model_env} is not set: run the suite with tests/clients/run.sh")
        if not KILN.is_file():
            pytest.fail(f"{KILN} is missing: cargo build --release --workspace --bins --lib")
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        self.args = [
            str(KILN), "serve", model,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--served-model-name", served_name,
            "--kv-cache-memory-bytes", "256MiB",
            "--threads", os.environ.get("KILN_TEST_THREADS", "2"),
            "--shutdown-timeout", f"{SHUTDOWN_TIMEOUT_S}s",
            "--enable-auto-tool-choice",
        ]
        if max_model_len is not None:
            self.args += ["--max-model-len", str(max_model_len)]
        if os.environ.get("KILN_TEST_FRONTENDS"):
            self.args += ["--frontend", os.environ["KILN_TEST_FRONTENDS"]]
        self.args += list(extra)
        # Each server gets an empty model cache of its own (the Ollama
        # management routes list and change it), unless `env` names one.
        cache = LOG_DIR / f"cache-{name}"
        shutil.rmtree(cache, ignore_errors=True)
        self.env = {**os.environ, "KILN_CACHE": str(cache), **(env or {})}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env)
        _running.append(self)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def tail(self, lines: int = 30) -> str:
        """The last log lines, without the access lines of /health and /metrics polling."""
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace")
        kept = [line for line in text.splitlines() if "path=/metrics}" not in line and "path=/health}" not in line]
        return "\n".join(kept[-lines:])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                pytest.fail(f"kiln serve ({self.name}) exited with {code} before it was ready:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"kiln serve ({self.name}) was not healthy after {START_TIMEOUT_S:.0f} s:\n{self.tail()}")

    def terminate(self) -> int | None:
        """SIGTERM and wait for the drain; the exit code, or None if it hung."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S + 5)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        finally:
            self._close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self in _running:
            _running.remove(self)
        self._log.close()

    def stop_and_check(self) -> None:
        code = self.terminate()
        assert code == 0, (
            f"kiln serve ({self.name}) did not shut down cleanly on SIGTERM "
            f"(exit {code}; None means still running after {SHUTDOWN_TIMEOUT_S + 5} s):\n{self.tail()}"
        )


@pytest.fixture(scope="session")
def server():
    s = KilnServer("kiln-serve")
    yield s
    s.stop_and_check()


@pytest.fixture(scope="session")
def base_url(server) -> str:
    return server.url


@pytest.fixture(scope="module")
def auth_server():
    s = KilnServer("kiln-serve-api-key", "--api-key", API_KEY)
    yield s
    s.stop_and_check()


@pytest.fixture(scope="module")
def embedding_server():
    s = KilnServer("kiln-serve-embeddings", model_env="KILN_TEST_EMBEDDING_MODEL",
                   served_name=EMBEDDING_NAME, max_model_len=None)
    yield s
    s.stop_and_check()


@pytest.fixture
def kiln_factory():
    """Starts extra servers for one test; stops (kills) whatever is left at the end."""
    started: list[KilnServer] = []

    def start(name: str, *extra: str) -> KilnServer:
        s = KilnServer(name, *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for s in list(_running):
            rep.sections.append((f"kiln serve log tail: {s.log_path}", s.tail()))


def pytest_sessionfinish(session, exitstatus):
    # A server left behind by an interrupted run must not outlive pytest.
    for s in list(_running):
        s.kill()

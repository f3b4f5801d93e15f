"""A throwaway ``redis-server`` (Debian's package) on 127.0.0.1 for tests and benchmarks.

``RedisServer`` starts one on a free port in a temporary directory, without persistence, waits until it
answers PING, and stops it. The ``redis_server`` fixture (module scope) skips the test module with a clear
reason when ``redis-server`` is not installed; ``.ci/run`` installs it, so in CI these tests run.
Import the fixture into a test module with ``from tests.support.redis_server import redis_server  # noqa: F401``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def redis_server_binary() -> str | None:
    """The path of ``redis-server``, or None when it is not installed."""
    return shutil.which("redis-server") or next(
        (str(path) for path in (Path("/usr/bin/redis-server"), Path("/usr/sbin/redis-server")) if path.exists()),
        None,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(port: int, password: str | None = None, timeout_s: float = 0.5) -> bool:
    """True when a Redis server on ``port`` answers PING (speaking RESP over a plain socket)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            if password is not None:
                sock.sendall(_command("AUTH", password))
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(_command("PING"))
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _command(*parts: str) -> bytes:
    encoded = [part.encode() for part in parts]
    return b"".join([f"*{len(encoded)}\r\n".encode(), *(b"$%d\r\n%s\r\n" % (len(p), p) for p in encoded)])


class RedisServer:
    """One ``redis-server`` process: ``start()``, ``url``, ``stop()``; also a context manager."""

    def __init__(self, directory: Path, *, password: str | None = None, binary: str | None = None) -> None:
        self.directory = directory
        self.password = password
        self.binary = binary or redis_server_binary()
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> RedisServer:
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _ in range(3):  # another process may grab the free port between probing and binding
            self.port = free_port()
            args = [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--logfile", str(self.log_path),
                "--daemonize", "no",
            ]  # fmt: skip
            if self.password:
                args += ["--requirepass", self.password]
            self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_until_ready():
                return self
            last_error = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT_S} s:\n{last_error}")

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            if ping(self.port, self.password):
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def require_redis_server() -> str:
    """The ``redis-server`` path; skips the calling test (module) when it is not installed."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    return binary


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server for the test module, stopped afterwards."""
    binary = require_redis_server()
    with RedisServer(tmp_path_factory.mktemp("redis"), binary=binary) as server:
        yield server

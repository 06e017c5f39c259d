"""A real Debian `redis-server` for the Redis tier and the contention bench.

`RedisServer.start()` runs one on a free 127.0.0.1 port in its own temp dir (no periodic saves,
no AOF), waits until it answers PING, and `stop()` ends it by PID. `restart()` saves, stops and
starts it again on the same port and dir, so the data survives like an Upstash failover.
Install the binary with `make redis` (apt-get, when missing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

INSTALL_HINT = (
    "redis-server is not installed; `make redis` installs it (apt-get install redis-server)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="prometei-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        # The binary comes from PATH (Debian's redis-server); every argument is ours.
        self.proc = subprocess.Popen(  # noqa: S603
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{log}")
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                pass
            time.sleep(0.02)  # polling for readiness, bounded by the deadline
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING in {timeout_s}s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        """Save, stop, start again on the same port and dir: the data survives."""
        assert self.proc is not None
        with contextlib.suppress(redis.ConnectionError):  # SHUTDOWN closes it as it succeeds
            self.client().shutdown(save=True)
        self.proc.wait(timeout=10)
        self.proc = None
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_env_ok() -> bool:
    return shutil.which("redis-server") is not None and os.name == "posix"

"""Play the Vercel platform for one built function, with Vercel's own Python runtime.

`vercel build` vendors `vercel_runtime` (PyPI `vercel-runtime`, the Python half of Vercel's
runtime) into every bundle, next to our code. This host lays the bundle out as a Lambda would
(from the function's `filePathMap`), starts it with a bare Python 3.12 (`-S`: nothing from the
interpreter's own site-packages, so a package missing from the bundle fails here as it would
there) and speaks the runtime's IPC protocol on a Unix socket: it waits for `server-started`,
sends HTTP requests to the port announced there with the platform's invocation headers, and
records every message the runtime sends back (`log` messages carry what would reach Vercel's
log view, per request).

Protocol facts, read in vercel_runtime 0.23.2 `vc_init.py`: messages are JSON objects ended by
a NUL byte; `log` payloads hold a base64 `message` and either a `level` (from the runtime's root
logging handler) or a `stream` (writes to sys.stdout/sys.stderr); a request's messages carry
`context.requestId` from the `x-vercel-internal-request-id` header, and `end` closes it.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deploy.vercel_build import BuildResult, Function

DEADLINE = 60.0


@dataclass
class LogLine:
    text: str
    level: str | None  # set when the runtime's logging handler sent it
    stream: str | None  # set when it was written to stdout/stderr
    request_id: int


class RuntimeHost:
    def __init__(self, build: BuildResult, function: Function, workdir: Path, python: str) -> None:
        self.build = build
        self.function = function
        self.workdir = workdir
        self.python = python
        self.messages: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._ids = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None
        self._listener: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self.port = 0

    # ---- lifecycle ------------------------------------------------------------------------

    def lay_out(self) -> Path:
        """The bundle as the platform unpacks it: filePathMap files plus the .func's own."""
        bundle = self.workdir / "bundle"
        for inside, source in self.function.file_map.items():
            target = bundle / inside
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.build.project / source, target)
        for path in self.function.directory.iterdir():
            if path.is_file() and path.name != ".vc-config.json":
                shutil.copyfile(path, bundle / path.name)
        return bundle

    def start(self, app_env: dict[str, str]) -> None:
        bundle = self.lay_out()
        ipc_path = self.workdir / "ipc.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(ipc_path))
        self._listener.listen(1)
        self._listener.settimeout(0.2)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir),
            "LANG": "C.UTF-8",
            **self.function.config.get("environment", {}),
            "VERCEL_IPC_PATH": str(ipc_path),
            **app_env,
        }
        with (
            (self.workdir / "stdout.txt").open("wb") as stdout,
            (self.workdir / "stderr.txt").open("wb") as stderr,
        ):
            self._process = subprocess.Popen(
                [self.python, "-S", "-c", "import vc__handler__python"],
                cwd=bundle,
                env=env,
                stdout=stdout,
                stderr=stderr,
            )
        connection = self._accept()
        self._reader = threading.Thread(target=self._read, args=(connection,), daemon=True)
        self._reader.start()
        started = self.wait_for(lambda m: m.get("type") == "server-started")
        self.port = int(started["payload"]["httpPort"])

    def _accept(self) -> socket.socket:
        """The runtime's IPC connection, or a failure that shows why the function died."""
        assert self._listener is not None and self._process is not None
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(None)
            return connection
        raise AssertionError(
            f"the function never connected (exit code {self._process.poll()}): "
            f"{self.process_output()[-2000:]}"
        )

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        if self._listener is not None:
            self._listener.close()
        if self._reader is not None:
            self._reader.join(timeout=10)

    def process_output(self) -> str:
        """What the function wrote outside IPC (only before the runtime took over its streams)."""
        return "".join(
            (self.workdir / name).read_text(encoding="utf-8", errors="replace")
            for name in ("stdout.txt", "stderr.txt")
        )

    # ---- IPC ------------------------------------------------------------------------------

    def _read(self, connection: socket.socket) -> None:
        buffer = b""
        with connection:
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                *complete, buffer = buffer.split(b"\0")
                with self._changed:
                    self.messages.extend(json.loads(raw) for raw in complete if raw)
                    self._changed.notify_all()

    def wait_for(self, predicate: Any) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        with self._changed:
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                code = self._process.poll() if self._process is not None else None
                if remaining <= 0 or code is not None:
                    raise AssertionError(
                        f"no such IPC message (function exit code {code}); last messages "
                        f"{self.messages[-5:]}; output: {self.process_output()[-2000:]}"
                    )
                self._changed.wait(min(remaining, 0.5))

    # ---- requests -------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, int]:
        """Send one invocation; return (status, body, request id) once the runtime ended it."""
        request_id = next(self._ids)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE)
        try:
            connection.request(
                method,
                path,
                body=body,
                headers={
                    "host": "prometei.example.com",
                    "x-forwarded-proto": "https",
                    "x-vercel-internal-invocation-id": f"inv-{request_id}",
                    "x-vercel-internal-request-id": str(request_id),
                    **(headers or {}),
                },
            )
            response = connection.getresponse()
            status, content = response.status, response.read()
        finally:
            connection.close()
        self.wait_for(
            lambda m: m.get("type") == "end" and m["payload"]["context"]["requestId"] == request_id
        )
        return status, content, request_id

    def logs(self, request_id: int | None = None) -> list[LogLine]:
        """Log messages, all or one request's (0 is the cold start, outside any request)."""
        with self._changed:
            messages = list(self.messages)
        lines = []
        for message in messages:
            if message.get("type") != "log":
                continue
            payload = message["payload"]
            line = LogLine(
                text=base64.b64decode(payload["message"]).decode("utf-8", errors="replace"),
                level=payload.get("level"),
                stream=payload.get("stream"),
                request_id=int(payload["context"]["requestId"]),
            )
            if request_id is None or line.request_id == request_id:
                lines.append(line)
        return lines

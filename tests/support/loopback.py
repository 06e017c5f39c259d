"""Serve a WSGI app on an ephemeral 127.0.0.1 port in a thread, for the length of a block.

`serving(app, name)` is the short form; `LoopbackServer` also closes and re-opens its port, so a
test can make a server refuse connections (a closed port) and come back at the same address.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


class LoopbackServer:
    """A threaded WSGI server on 127.0.0.1; `port=0` picks a free port on the first start."""

    def __init__(self, app: Any, name: str, port: int = 0) -> None:
        self.app = app
        self.name = name
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    def start(self) -> LoopbackServer:
        if self._server is not None:
            return self
        server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self.port = server.server_port
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def close_port(self) -> None:
        """Stop listening: new connections to the port are refused until `reopen_port()`."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def reopen_port(self) -> None:
        """Listen again on the same port (werkzeug sets SO_REUSEADDR, so it is free at once)."""
        self.start()

    stop = close_port


@contextmanager
def serving(app: Any, name: str) -> Iterator[str]:
    """Yield the server's base URL (`http://127.0.0.1:<port>`); stop it afterwards."""
    server = LoopbackServer(app, name).start()
    try:
        yield server.url
    finally:
        server.stop()

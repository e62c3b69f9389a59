"""Running the real server in tests: uvicorn on a free loopback port, raw HTTP, Prometheus parsing."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time


class RunningServer:
    """`create_app(...)` served by uvicorn in a thread, on a loopback socket bound to a free port, with
    the server's own uvicorn settings (`uvicorn_config`; `overrides` replace some)."""

    def __init__(self, app, **overrides):
        from llm2comp.server.app import create_server, uvicorn_config

        self.app = app
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = {"log_level": "warning", "timeout_graceful_shutdown": 20, **overrides}
        self.server = create_server(app, uvicorn_config(app, app.state.llm2comp.settings, **options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def begin_shutdown(self) -> None:
        """What SIGTERM does: stop accepting, let in-flight requests finish, run the shutdown."""
        self.server.should_exit = True

    def __exit__(self, *exc) -> None:
        self.begin_shutdown()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not stop"


def call(port: int, method: str, path: str, body=None, *, raw: bytes | None = None, headers: dict | None = None,
         timeout: float = 60):
    """(status, headers, parsed JSON body or text) for one request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    content = response.read().decode()
    connection.close()
    kind = response.getheader("content-type", "")
    return response.status, dict(response.getheaders()), json.loads(content) if "json" in kind else content


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)$"
    found = re.search(pattern, text, flags=re.M)
    return float(found.group(1)) if found else 0.0

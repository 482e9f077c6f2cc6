"""A loopback HTTP proxy that injects faults, for testing clients of an OpenAI-compatible server.

    from fault_proxy import FaultProxy

    with FaultProxy("http://127.0.0.1:8000/v1", faults={2: "429", 3: "500", 5: "drop", 6: "hang"}) as proxy:
        client(base_url=proxy.url)           # http://127.0.0.1:PORT/v1 (the upstream's path kept)
        proxy.received                       # requests that reached the proxy (1, 2, 3, ...)
        proxy.forwarded                      # requests passed to the upstream and answered by it
        proxy.faulted                        # [(sequence number, kind), ...] in arrival order
        proxy.requests                       # [(sequence number, path, body bytes), ...] of all
        proxy.bodies()                       # the JSON bodies of the requests, in arrival order

Requests are numbered from 1 in arrival order (under concurrency the order is whatever the
client sends; the number of faults is exact either way). `faults` maps a sequence number to a
kind, or is a callable `(seq, path, body) -> kind | None` (body: the request's bytes, so a test can
fail every request that asks a given question):

- ``"429"``, ``"500"``, ``"502"``, ``"503"``, or any other status code as text: answered by the
  proxy with an OpenAI-shaped error body (429 carries `Retry-After: retry_after` when given);
- ``"drop"``: the request is read, then the connection is closed with no answer;
- ``"hang"``: no answer until `hang_seconds` pass (or the proxy stops), then the connection is
  closed; a client with a shorter timeout sees a read timeout;
- ``"garbage"``: HTTP 200 with a body that is not JSON.

Faulted requests never reach the upstream. `start()` binds 127.0.0.1 on a free port and serves
from a daemon thread; `stop()` (or leaving the `with` block) shuts it down.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding"}


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        faults: dict[int, str] | Callable[[int, str, bytes], str | None] | None = None,
        *,
        hang_seconds: float = 60.0,
        retry_after: float | None = None,
    ):
        parts = urlsplit(upstream)
        self.upstream_root = f"{parts.scheme}://{parts.netloc}"
        self.path_prefix = parts.path.rstrip("/")
        self.faults = faults or {}
        self.hang_seconds = hang_seconds
        self.retry_after = retry_after
        self.received = 0
        self.forwarded = 0
        self.faulted: list[tuple[int, str]] = []
        self.requests: list[tuple[int, str, bytes]] = []
        self.url = ""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=None)

    # --- life ---------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                proxy._handle(self)

            def do_POST(self):
                proxy._handle(self)

            def log_message(self, *args):  # quiet
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}{self.path_prefix}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._http.close()

    def __enter__(self) -> FaultProxy:
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    def bodies(self) -> list:
        with self._lock:
            return [json.loads(body) for _, _, body in sorted(self.requests) if body]

    # --- one request --------------------------------------------------------------------------
    def _kind(self, seq: int, path: str, body: bytes) -> str | None:
        if callable(self.faults):
            return self.faults(seq, path, body)
        return self.faults.get(seq)

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        with self._lock:
            self.received += 1
            seq = self.received
            self.requests.append((seq, h.path, body))
        kind = self._kind(seq, h.path, body)
        if kind is not None:
            with self._lock:
                self.faulted.append((seq, kind))
            self._fault(h, kind)
            return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
        try:
            resp = self._http.request(h.command, self.upstream_root + h.path, content=body, headers=headers)
        except httpx.HTTPError as e:
            self._send(h, 502, json.dumps({"error": {"message": f"proxy: upstream failed: {e}"}}).encode())
            return
        with self._lock:
            self.forwarded += 1
        kept = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP | {"content-encoding"}}
        self._send(h, resp.status_code, resp.content, kept)

    def _fault(self, h: http.server.BaseHTTPRequestHandler, kind: str) -> None:
        if kind == "drop":
            h.close_connection = True
            return
        if kind == "hang":
            self._stopping.wait(self.hang_seconds)
            h.close_connection = True
            return
        if kind == "garbage":
            self._send(h, 200, b"<html>not json", {"Content-Type": "text/html"})
            return
        status = int(kind)
        body = json.dumps({"error": {"message": f"injected fault {status}", "type": "fault", "code": status}})
        headers = {"Content-Type": "application/json"}
        if status == 429 and self.retry_after is not None:
            headers["Retry-After"] = f"{self.retry_after:g}"
        self._send(h, status, body.encode(), headers)

    @staticmethod
    def _send(h, status: int, body: bytes, headers: dict | None = None) -> None:
        try:
            h.send_response(status)
            for k, v in (headers or {"Content-Type": "application/json"}).items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            h.close_connection = True

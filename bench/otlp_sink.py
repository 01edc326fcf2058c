"""An OTLP/HTTP receiver on 127.0.0.1 that reads and drops what it gets (``bench.paired
--tracing``): the traced worker exports to it as it would to a collector, and the bench counts the
requests and bytes, so that the measured cost is the worker's own (spans, batching, encoding,
sending) and no collector's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    url: str  # OTEL_EXPORTER_OTLP_ENDPOINT for the traced worker
    requests: int = 0
    bytes: int = 0


@contextmanager
def otlp_sink() -> Iterator[Received]:
    """A running sink and its counts; stopped on exit."""
    lock = threading.Lock()
    received = Received("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(size)
            with lock:
                received.requests += 1
                received.bytes += size
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

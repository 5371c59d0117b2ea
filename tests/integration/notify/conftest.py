"""Real receivers for notification tests: a local HTTP webhook server and a local SMTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class WebhookServer:
    """An HTTP server on 127.0.0.1 that records every POST body.

    ``fail_first`` requests are answered with ``fail_status``; while ``hold`` is clear every
    request waits for it (a hung receiver).
    """

    fail_first: int = 0
    fail_status: int = 500
    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    path: str = "/hook"

    def __post_init__(self) -> None:
        self.hold.set()

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """Bodies of the requests answered with success."""
        with self.lock:
            return [r for r, s in zip(self.requests, self.statuses, strict=True) if s == 200]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> bool:
        """Wait until ``count`` requests were answered successfully."""
        done = threading.Event()

        def check() -> bool:
            return len(self.delivered) >= count

        for _ in range(int(timeout_s / 0.02)):
            if check():
                return True
            done.wait(0.02)
        return check()


def _handler(server: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            server.arrived.set()
            server.hold.wait(30)
            with server.lock:
                n = len(server.requests)
                status = server.fail_status if n < server.fail_first else 200
                server.requests.append(body)
                server.statuses.append(status)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def webhook_server() -> Iterator[Callable[..., WebhookServer]]:
    """Factory of running webhook servers, all shut down after the test."""
    running: list[tuple[ThreadingHTTPServer, threading.Thread, WebhookServer]] = []

    def start(**kwargs: Any) -> WebhookServer:
        state = WebhookServer(**kwargs)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        httpd.daemon_threads = True
        state.port = httpd.server_address[1]
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        running.append((httpd, thread, state))
        return state

    yield start
    for httpd, thread, state in running:
        state.hold.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@dataclass
class SmtpSink:
    """Mails received by the local SMTP server."""

    host: str
    port: int
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> bool:
        """Wait until ``count`` mails arrived."""
        pause = threading.Event()
        for _ in range(int(timeout_s / 0.02)):
            with self.lock:
                if len(self.messages) >= count:
                    return True
            pause.wait(0.02)
        with self.lock:
            return len(self.messages) >= count


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on a free loopback port."""
    from aiosmtpd.controller import Controller

    from tests.conftest import free_port

    sink = SmtpSink(host="127.0.0.1", port=free_port())

    class Handler:
        async def handle_DATA(  # noqa: N802 - the name aiosmtpd calls
            self, server: Any, session: Any, envelope: Any
        ) -> str:
            with sink.lock:
                sink.messages.append(
                    (envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
                )
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()

"""Request guards that run before routing: body size limits, security headers, auth throttling.

* :class:`BodyLimitMiddleware` refuses a body larger than its route's limit with 413 before the
  app sees it -- before FastAPI parses JSON and before the key is checked. A declared
  ``Content-Length`` is checked at once; a chunked body is read up to the limit and then passed
  on (or refused), so no request holds more than its limit in memory.
* :class:`SecurityHeadersMiddleware` adds ``nosniff``, ``frame-ancestors 'none'`` /
  ``X-Frame-Options: DENY`` and a referrer policy to every response, and ``Cache-Control:
  no-store`` to JSON (responses carry operational data and are fetched with keys).
* :class:`AuthThrottle` counts failed key checks per client address and per presented key in a
  sliding window (in the API process's memory); over the limit, the dependency answers 429.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

IMPORT_PATHS = ("/api/v1/areas/import", "/api/v1/devices/import")


def _error_body(code: str, message: str, detail: object = None) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "detail": detail}}).encode()


class BodyLimitMiddleware:
    """413 for request bodies over the route's limit, before the app reads them."""

    def __init__(self, app: ASGIApp, *, default_limit: int, limits: dict[str, int]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = limits

    def limit_for(self, path: str) -> int:
        """The body limit of ``path`` in bytes."""
        return self.limits.get(path.rstrip("/") or "/", self.default_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, or buffer a chunked body up to the limit."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _too_large(send, limit, "Content-Length is not a number", status=400)
                    return
        if length is not None:
            if length > limit:
                await _too_large(send, limit, f"the body is {length} bytes")
                return
            await self.app(scope, _counting(receive, limit), send)
            return
        # no declared length (chunked): read up to the limit here, then replay it
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _too_large(send, limit, f"the body is more than {limit} bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks)}]), send)


def _replay(messages: list[Message]) -> Receive:
    pending = deque(messages)

    async def receive() -> Message:
        if pending:
            return pending.popleft()
        return {"type": "http.disconnect"}

    return receive


def _counting(receive: Receive, limit: int) -> Receive:
    """Guard against a client sending more than its Content-Length said."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                return {"type": "http.disconnect"}
        return message

    return wrapped


async def _too_large(send: Send, limit: int, what: str, *, status: int = 413) -> None:
    code = "too_large" if status == 413 else "bad_request"
    message = (
        f"{what}; this route accepts at most {limit} bytes (api.max_body_bytes / "
        "api.max_import_bytes)"
        if status == 413
        else what
    )
    body = _error_body(code, message, {"limit_bytes": limit})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeadersMiddleware:
    """Security headers on every response (added unless the route set its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap ``send`` to add the headers to the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in names)
                csp = next(
                    (
                        i
                        for i, (n, _) in enumerate(headers)
                        if n.lower() == b"content-security-policy"
                    ),
                    None,
                )
                if csp is None:
                    headers.append((b"content-security-policy", b"frame-ancestors 'none'"))
                elif b"frame-ancestors" not in headers[csp][1]:
                    name, value = headers[csp]
                    headers[csp] = (name, value + b"; frame-ancestors 'none'")
                ctype = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                if b"cache-control" not in names and (
                    ctype.startswith(b"application/json") or ctype.startswith(b"text/event-stream")
                ):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AuthThrottle:
    """Failed key checks per client address and per presented key, in a sliding window."""

    def __init__(
        self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    @staticmethod
    def _keys(address: str | None, key: str | None) -> list[str]:
        out = [f"addr:{address or '?'}"]
        if key:
            out.append("key:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:32])
        return out

    def _prune(self, now: float) -> None:
        if len(self._failures) < 10_000:
            return
        cutoff = now - self.window_s
        for name in [n for n, q in self._failures.items() if not q or q[-1] < cutoff]:
            del self._failures[name]

    def retry_after(self, address: str | None, key: str | None) -> float | None:
        """Seconds until the address (or the key) may try again, or None if it may now."""
        now = self._clock()
        cutoff = now - self.window_s
        wait: float | None = None
        with self._lock:
            for name in self._keys(address, key):
                q = self._failures.get(name)
                if q is None:
                    continue
                while q and q[0] < cutoff:
                    q.popleft()
                if len(q) >= self.max_failures:
                    left = q[len(q) - self.max_failures] + self.window_s - now
                    wait = max(wait or 0.0, left)
        return wait

    def failed(self, address: str | None, key: str | None) -> None:
        """Record one failed key check."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            for name in self._keys(address, key):
                self._failures.setdefault(name, deque(maxlen=self.max_failures * 2)).append(now)

"""Free loopback ports for the servers a process starts itself (the demo, tests, benchmarks)."""

from __future__ import annotations

import socket

# Ports this process has handed out. The kernel may hand the same ephemeral port out again once
# the probing socket is closed, before the server meant for the first one has bound it: two
# servers of one process (a database and a broker, a broker's two listeners) must not share one.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback TCP port free right now and not handed out before by this process."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def in_use(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0

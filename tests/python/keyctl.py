"""The virtual key's control socket, spoken directly (as any script would, without the runner's
CLI): one line, one reply."""

from __future__ import annotations

import socket
import time


def control(path, line: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().strip()


def wait_for(path, status_line: str, expected: str = "waiting 1-1", deadline_s: float = 10) -> None:
    """Poll `status_line` (`status` for a touch, `uv status` for a finger) until it says
    `expected`."""
    deadline = time.monotonic() + deadline_s
    while (reply := control(path, status_line)) != expected:
        assert time.monotonic() < deadline, f"{status_line!r} still says {reply!r}"
        time.sleep(0.05)

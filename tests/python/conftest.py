"""Start a virtual key (the usbip-runner binary) for each test that asks for one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from usbip_hid import open_device

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(os.environ.get("USBIP_RUNNER", ROOT / "target" / "debug" / "usbip-runner"))


class RunningKey:
    def __init__(self, *args: str):
        if not RUNNER.exists():
            raise RuntimeError(f"{RUNNER} is missing: run `cargo build -p usbip-runner`")
        self.process = subprocess.Popen(
            [str(RUNNER), "--listen", "127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env={**os.environ, "USBIP_RUNNER_LOG": "warn"},
            text=True,
        )
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.process.kill()
            raise RuntimeError(f"unexpected runner output {line!r}")
        host, port = line.removeprefix("listening on ").rsplit(":", 1)
        self.host, self.port = host, int(port)

    def device(self):
        return open_device(self.host, self.port)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def key():
    running = RunningKey("--ephemeral", "--presence", "auto")
    yield running
    running.stop()


@pytest.fixture
def device(key):
    device = key.device()
    yield device
    device.close()

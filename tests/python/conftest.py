"""Start a virtual key (the usbip-runner binary) for each test that asks for one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from usbip_hid import open_device

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(os.environ.get("USBIP_RUNNER", ROOT / "target" / "debug" / "usbip-runner"))


def _refuse_stale_runner() -> None:
    """A binary older than the code it is built from would test yesterday's key."""
    if not RUNNER.exists():
        raise RuntimeError(f"{RUNNER} is missing: run `cargo build -p usbip-runner`")
    if "USBIP_RUNNER" in os.environ:
        return  # a binary chosen by hand is taken as it is
    built = RUNNER.stat().st_mtime
    for source in [*ROOT.glob("usbip-runner/src/**/*.rs"), *ROOT.glob("authenticator/src/**/*.rs")]:
        if source.stat().st_mtime > built:
            raise RuntimeError(f"{RUNNER} is older than {source}: run `cargo build -p usbip-runner`")


class RunningKey:
    def __init__(self, *args: str):
        _refuse_stale_runner()
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

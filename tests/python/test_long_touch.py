"""CTAP 2.2 longTouchForReset over USB/IP with python-fido2: getInfo offers it, python-fido2's
Config sends enableLongTouchForReset (0x04) with an acfg token, the switch survives a restart,
and then authenticatorReset waits for a long touch: a short one (`approve` on the control
socket) does not answer it, `hold` does. The reset returns the key to its factory setting."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from conftest import RunningKey
from fido2.ctap import CtapError
from fido2.ctap2 import Config, Ctap2
from fido2.ctap2.pin import ClientPin

PIN = "long touch"
ENABLE_LONG_TOUCH_FOR_RESET = 0x04


def control(path, line: str) -> str:
    """One line on the key's control socket, spoken directly (not through the runner's CLI)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().strip()


def wait_until_waiting(path, deadline_s: float = 10) -> None:
    deadline = time.monotonic() + deadline_s
    while control(path, "status") != "waiting 1-1":
        assert time.monotonic() < deadline, "the reset never asked for a touch"
        time.sleep(0.05)


def test_enable_long_touch_then_reset_needs_it(tmp_path):
    sock = tmp_path / "control.sock"
    state = ["--state", str(tmp_path), "--presence", "control", "--control", str(sock)]
    key = RunningKey(*state)
    device = key.device()
    ctap2 = Ctap2(device)
    info = ctap2.get_info()
    assert info.long_touch_for_reset is False
    assert ENABLE_LONG_TOUCH_FOR_RESET in info.authenticator_config_commands
    client_pin = ClientPin(ctap2)
    client_pin.set_pin(PIN)
    with pytest.raises(CtapError) as error:
        Config(ctap2)._call(ENABLE_LONG_TOUCH_FOR_RESET)
    assert error.value.code == CtapError.ERR.PUAT_REQUIRED
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.AUTHENTICATOR_CFG)
    Config(ctap2, client_pin.protocol, token)._call(ENABLE_LONG_TOUCH_FOR_RESET)
    assert ctap2.get_info().long_touch_for_reset is True
    device.close()
    key.stop()

    # A restart: still on. The reset must arrive within 10 s of it; the touch may end later.
    key = RunningKey(*state)
    device = key.device()
    ctap2 = Ctap2(device)
    assert ctap2.get_info().long_touch_for_reset is True
    outcome = {}

    def reset():
        try:
            ctap2.reset()
            outcome["status"] = 0
        except CtapError as e:
            outcome["status"] = e.code

    thread = threading.Thread(target=reset)
    thread.start()
    wait_until_waiting(sock)
    assert control(sock, "approve") == "error 1-1 waits for a long touch: hold 1-1"
    time.sleep(0.3)
    assert thread.is_alive() and control(sock, "status") == "waiting 1-1", "a short touch answers nothing"
    assert control(sock, "hold") == "ok waiting"
    thread.join(timeout=10)
    assert outcome == {"status": 0}
    info = ctap2.get_info()
    assert info.long_touch_for_reset is False, "factory setting again"
    assert info.options["clientPin"] is False, "the reset happened"
    device.close()
    key.stop()

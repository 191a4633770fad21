"""Seed corpora recorded from real traffic: run the python-fido2 end-to-end tests
(tests/python, against the usbip-runner binary) with their USB/IP connection wrapped, and write
what each connection sent as seeds for every target:

- usbip_pdu: the client's whole byte stream (import, enumeration, URBs);
- ctaphid: its HID reports, in the target's format (a time byte, then the report);
- ctap2 / ctap1: its CTAP2 requests and U2F APDUs, in the raw format (a command selector, then
  the CBOR; requests joined by 0xFE, so only requests without that byte are kept).

Usage: .venv/bin/python fuzz/record_corpus.py OUT_DIR; needs `cargo build -p usbip-runner`.
Seeds are named rec-<digest of content>. The repository keeps only those that add coverage to
its corpus (libFuzzer's merge keeps the files that bring new features):

    cd fuzz && ./target/x86_64-unknown-linux-gnu/release/T -merge=1 MERGED_T OUT_DIR/T

after copying corpus/T into MERGED_T; then copy the rec-* files that were kept into corpus/T.
"""

import hashlib
import os
import socket
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
python_tests = here.parent / "tests" / "python"
sys.path.insert(0, str(python_tests))

import pytest  # noqa: E402
import usbip_hid  # noqa: E402
from fido2.hid import CtapHidDevice  # noqa: E402

if len(sys.argv) != 2:
    sys.exit(__doc__)
out = Path(sys.argv[1]).resolve()
COMMANDS = [0x01, 0x02, 0x04, 0x06, 0x07, 0x08, 0x0A, 0x0B, 0x0C, 0x0D, 0x41]
CTAPHID_CBOR, CTAPHID_MSG = 0x10, 0x03
written = {}


def save(target, data):
    if not data:
        return
    name = "rec-" + hashlib.sha256(data).hexdigest()[:16]
    directory = out / target
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if not path.exists():
        path.write_bytes(data)
        written[target] = written.get(target, 0) + 1


def joined(requests, limit=8):
    """Requests without 0xFE, in runs of `limit`, joined by 0xFE (the raw targets' format)."""
    usable = [r for r in requests if 0xFE not in r]
    for i in range(0, len(usable), limit):
        yield b"\xfe".join(usable[i : i + limit])


class RecordingSocket:
    """A socket that remembers what was sent on it."""

    def __init__(self, inner, session):
        self._inner = inner
        self._session = session

    def sendall(self, data):
        self._session["stream"] += data
        return self._inner.sendall(data)

    def __getattr__(self, name):
        return getattr(self._inner, name)


sessions = {}
create_connection = socket.create_connection


def recording_create_connection(*args, **kwargs):
    session = {"stream": bytearray(), "reports": [], "cbor": [], "msg": []}
    sock = RecordingSocket(create_connection(*args, **kwargs), session)
    sessions[id(sock)] = session
    return sock


usbip_hid.socket.create_connection = recording_create_connection

write_packet = usbip_hid.UsbIpConnection.write_packet


def recording_write_packet(self, data):
    sessions[id(self.sock)]["reports"].append(bytes(data))
    return write_packet(self, data)


usbip_hid.UsbIpConnection.write_packet = recording_write_packet

close = usbip_hid.UsbIpConnection.close


def recording_close(self):
    session = sessions.pop(id(self.sock), None)
    if session is not None:
        flush(session)
    return close(self)


usbip_hid.UsbIpConnection.close = recording_close

call = CtapHidDevice.call


def recording_call(self, cmd, data=b"", *args, **kwargs):
    session = sessions.get(id(getattr(self._connection, "sock", None)))
    if session is not None:
        if cmd == CTAPHID_CBOR and data and data[0] in COMMANDS:
            session["cbor"].append(bytes([COMMANDS.index(data[0])]) + bytes(data[1:]))
        elif cmd == CTAPHID_MSG:
            session["msg"].append(bytes(data))
    return call(self, cmd, data, *args, **kwargs)


CtapHidDevice.call = recording_call


def flush(session):
    save("usbip_pdu", bytes(session["stream"][: 64 * 1024]))
    reports = session["reports"][:200]
    save("ctaphid", b"".join(b"\x01" + r for r in reports))
    for seed in joined(session["cbor"]):
        save("ctap2", seed)
    for seed in joined(session["msg"]):
        save("ctap1", seed)


if __name__ == "__main__":
    os.chdir(python_tests)
    status = pytest.main(["-q", "-p", "no:cacheprovider", str(python_tests)])
    for session in list(sessions.values()):
        flush(session)
    print("recorded:", ", ".join(f"{t} {n}" for t, n in sorted(written.items())) or "nothing")
    sys.exit(status)

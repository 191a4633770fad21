"""A pure-Python USB/IP client that gives python-fido2 a CtapHidDevice over USB/IP.

It imports a device from a USB/IP server (protocol 0x0111), enumerates it enough to find the
FIDO HID interrupt endpoints, and moves 64-byte reports with interrupt URBs, keeping one IN URB
outstanding as the kernel's usbhid does. It is strict where the kernel is: a completion longer
than its URB, or a reply to a URB that does not exist, is an error.
"""

from __future__ import annotations

import socket
import struct

from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

VERSION = 0x0111
CMD_SUBMIT, CMD_UNLINK, RET_SUBMIT, RET_UNLINK = 1, 2, 3, 4
DIR_OUT, DIR_IN = 0, 1
REPORT = 64


class UsbIpError(Exception):
    pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise UsbIpError("connection closed")
        data += chunk
    return bytes(data)


class UsbIpConnection(CtapHidConnection):
    def __init__(self, host: str, port: int, bus_id: str = "1-1", timeout: float = 40.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.seqnum = 0
        self.outstanding: dict[int, tuple[int, int]] = {}
        self.completions: dict[int, tuple[int, bytes]] = {}
        self.in_urb: int | None = None
        self._import(bus_id)
        self.ep_in, self.ep_out = self._enumerate()

    # -- USB/IP ---------------------------------------------------------------------------

    def _import(self, bus_id: str) -> None:
        self.sock.sendall(struct.pack(">HHI32s", VERSION, 0x8003, 0, bus_id.encode()))
        version, code, status = struct.unpack(">HHI", _recv_exact(self.sock, 8))
        if (version, code) != (VERSION, 0x0003):
            raise UsbIpError(f"bad OP_REP_IMPORT {version:#x} {code:#x}")
        if status != 0:
            raise UsbIpError("import refused")
        record = _recv_exact(self.sock, 312)
        if record[256:288].rstrip(b"\0").decode() != bus_id:
            raise UsbIpError("imported the wrong device")

    def _submit(self, ep: int, direction: int, length: int, setup: bytes = bytes(8), data: bytes = b"") -> int:
        self.seqnum += 1
        header = struct.pack(">IIIIIIIIII8s", CMD_SUBMIT, self.seqnum, 0x00010002, direction, ep, 0, length, 0, 0, 0, setup)
        self.outstanding[self.seqnum] = (direction, length)
        self.sock.sendall(header + data)
        return self.seqnum

    def _receive(self) -> None:
        header = _recv_exact(self.sock, 48)
        command, seqnum = struct.unpack(">II", header[:8])
        status, actual = struct.unpack(">iI", header[20:28])
        if command != RET_SUBMIT:
            raise UsbIpError(f"unexpected reply command {command}")
        if seqnum not in self.outstanding:
            raise UsbIpError(f"RET_SUBMIT for unknown seqnum {seqnum}")
        direction, length = self.outstanding.pop(seqnum)
        if actual > length:
            raise UsbIpError(f"completion of {actual} bytes for a {length}-byte URB")
        data = _recv_exact(self.sock, actual) if direction == DIR_IN else b""
        self.completions[seqnum] = (status, data)

    def _wait(self, seqnum: int) -> tuple[int, bytes]:
        while seqnum not in self.completions:
            self._receive()
        return self.completions.pop(seqnum)

    def _control_in(self, request_type: int, request: int, value: int, index: int, length: int) -> bytes:
        setup = struct.pack("<BBHHH", request_type, request, value, index, length)
        status, data = self._wait(self._submit(0, DIR_IN, length, setup))
        if status != 0:
            raise UsbIpError(f"control request {request:#x} failed: {status}")
        return data

    def _control_out(self, request_type: int, request: int, value: int, index: int) -> None:
        setup = struct.pack("<BBHHH", request_type, request, value, index, 0)
        status, _ = self._wait(self._submit(0, DIR_OUT, 0, setup))
        if status != 0:
            raise UsbIpError(f"control request {request:#x} failed: {status}")

    def _enumerate(self) -> tuple[int, int]:
        device = self._control_in(0x80, 6, 0x0100, 0, 18)
        if len(device) != 18:
            raise UsbIpError("short device descriptor")
        total = struct.unpack_from("<H", self._control_in(0x80, 6, 0x0200, 0, 9), 2)[0]
        config = self._control_in(0x80, 6, 0x0200, 0, total)
        self._control_out(0x00, 9, config[5], 0)
        ep_in = ep_out = 0
        i = 0
        while i + 1 < len(config):
            length, kind = config[i], config[i + 1]
            if kind == 5 and config[i + 3] & 3 == 3:
                if config[i + 2] & 0x80:
                    ep_in = config[i + 2] & 0x0F
                else:
                    ep_out = config[i + 2] & 0x0F
            i += max(length, 2)
        report = self._control_in(0x81, 6, 0x2200, 0, 255)
        if not report.startswith(bytes([0x06, 0xD0, 0xF1])):
            raise UsbIpError("not a FIDO HID device")
        if not (ep_in and ep_out):
            raise UsbIpError("no interrupt endpoints")
        return ep_in, ep_out

    # -- CtapHidConnection --------------------------------------------------------------------

    def write_packet(self, data: bytes) -> None:
        if len(data) != REPORT:
            raise UsbIpError("reports are 64 bytes")
        status, _ = self._wait(self._submit(self.ep_out, DIR_OUT, REPORT, data=data))
        if status != 0:
            raise UsbIpError(f"interrupt OUT failed: {status}")

    def read_packet(self) -> bytes:
        if self.in_urb is None:
            self.in_urb = self._submit(self.ep_in, DIR_IN, REPORT)
        status, data = self._wait(self.in_urb)
        self.in_urb = None
        if status != 0 or len(data) != REPORT or data == bytes(REPORT):
            raise UsbIpError(f"bad interrupt IN completion: status {status}, {len(data)} bytes")
        return data

    def close(self) -> None:
        self.sock.close()


def open_device(host: str, port: int, bus_id: str = "1-1") -> CtapHidDevice:
    """A python-fido2 CtapHidDevice on a USB/IP key."""
    descriptor = HidDescriptor(f"usbip://{host}:{port}/{bus_id}", 0x1209, 0x0001, REPORT, REPORT, None, None)
    return CtapHidDevice(descriptor, UsbIpConnection(host, port, bus_id))

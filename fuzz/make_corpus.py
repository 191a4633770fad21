"""Seed corpora for the fuzz targets, made from real requests (python-fido2's CBOR encoder)."""

import hashlib
import struct
import sys
from pathlib import Path

from fido2 import cbor

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "corpus")

COMMANDS = [0x01, 0x02, 0x04, 0x06, 0x07, 0x08, 0x0A, 0x0B, 0x0C, 0x0D, 0x41]
cdh = bytes(range(32))
make_credential = cbor.encode({
    1: cdh,
    2: {"id": "example.com", "name": "Example"},
    3: {"id": b"user", "name": "user", "displayName": "User"},
    4: [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -8}],
    6: {"credProtect": 2, "hmac-secret": True, "credBlob": b"blob"},
    7: {"rk": True},
})
get_assertion = cbor.encode({1: "example.com", 2: cdh, 4: {"credBlob": True}, 5: {"up": False}})
seeds = {
    "ctap2": {
        "make_credential": bytes([0]) + make_credential,
        "get_assertion": bytes([1]) + get_assertion,
        "get_info": bytes([2]),
        "pin_retries": bytes([3]) + cbor.encode({1: 2, 2: 1}),
        "key_agreement": bytes([3]) + cbor.encode({1: 2, 2: 2}),
        "cred_mgmt": bytes([6]) + cbor.encode({1: 1, 3: 2, 4: bytes(32)}),
        "large_blobs": bytes([8]) + cbor.encode({1: 100, 3: 0}),
        "config": bytes([9]) + cbor.encode({1: 2}),
        "series": bytes([0]) + make_credential + b"\xfe" + bytes([1]) + get_assertion + b"\xfe" + bytes([5]),
    },
    "ctap1": {
        "version": bytes([0, 3, 0, 0, 0, 0, 0]),
        "register": bytes([0, 1, 3, 0, 0, 0, 64]) + bytes(64) + bytes([0, 0]),
        "authenticate": bytes([0, 2, 7, 0, 0, 0, 65 + 75]) + bytes(64) + bytes([75]) + bytes(75) + bytes([0, 0]),
    },
}

def packet(cid, cmd, payload):
    head = struct.pack(">IBH", cid, cmd, len(payload)) + payload[:57]
    return head.ljust(64, b"\0")

init = packet(0xFFFFFFFF, 0x86, bytes(8))
ping = packet(1, 0x81, b"hello")
cbor_info = packet(1, 0x90, b"\x04")
seeds["ctaphid"] = {
    "init_ping": b"\x01" + init + b"\x01" + ping,
    "init_cbor": b"\x01" + init + b"\x01" + cbor_info,
}
devlist = struct.pack(">HHI", 0x0111, 0x8005, 0)
import_req = struct.pack(">HHI32s", 0x0111, 0x8003, 0, b"1-1")
submit = struct.pack(">IIIIIIIIII8s", 1, 1, 0, 1, 0, 0, 18, 0, 0, 0, bytes([0x80, 6, 0, 1, 0, 0, 18, 0]))
out_submit = struct.pack(">IIIIIIIIII8s", 1, 2, 0, 0, 1, 0, 64, 0, 0, 0, bytes(8)) + init
unlink = struct.pack(">IIIII", 2, 3, 0, 0, 0) + struct.pack(">I", 1) + bytes(24)
seeds["usbip_pdu"] = {"devlist": devlist, "import": import_req, "urbs": submit + out_submit + unlink}


# The storage target reads its input with `arbitrary`'s Unstructured: a u64 RNG seed, then per
# boot a cut flag (and budget, tear), an operation count and the operations (see storage.rs).
def storage_ops(*ops):
    return b"".join(ops)

REGISTER = lambda rp, user, eddsa=0, protect=1, blob=0: bytes([0, rp, user, eddsa, protect, blob])
ASSERT = lambda n: bytes([2, n])
SET_PIN = bytes([3, 0x42, 4])
WRONG_PIN, RIGHT_PIN = bytes([4]), bytes([5])
DELETE = lambda rp, user: bytes([6, rp, user])
BLOB = lambda length, fill: bytes([7]) + struct.pack(">H", length - 1) + bytes([fill])
SETTINGS = bytes([8, 1, 8, 0])
RESET = bytes([9])
session = [REGISTER(0, 0), REGISTER(0, 1, 1, 3, 32), REGISTER(1, 7), ASSERT(70), SET_PIN, WRONG_PIN,
           WRONG_PIN, RIGHT_PIN, DELETE(0, 1), BLOB(1017, 0x42), SETTINGS, REGISTER(0, 0, 1), RESET,
           REGISTER(2, 3), ASSERT(100)]

def boot(ops, cut=None, tear=0):
    head = bytes([1, cut - 1, tear]) if cut else bytes([0])
    return head + bytes([len(ops) - 1]) + b"".join(ops)

seed = bytes(8)
seeds["storage"] = {"session": seed + boot(session)}
for cut in (1, 3, 8, 20, 40, 90):
    for tear in (0, 128):
        seeds["storage"][f"cut_{cut}_tear_{tear}"] = seed + boot(session, cut, tear) + boot(session[:4], 5, tear)

# ctap2's structured mode (first byte >= 0x80): a setup (none, key agreement, or a PIN and a
# token for one RP or for none), a protocol, then bytes from which the platform builds requests.
for setup in range(4):
    for protocol in range(2):
        body = b"".join(hashlib.sha256(bytes([setup, protocol, i])).digest() for i in range(12))
        seeds["ctap2"][f"structured_{setup}_{protocol}"] = bytes([0x80, setup, protocol]) + body

for target, files in seeds.items():
    directory = out / target
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)

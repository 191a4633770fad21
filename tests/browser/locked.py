"""The browser tier's PIN-locked key, seen from the host over USB/IP before and after a browser
unlocks it (docs/pin-lock.md).

    locked.py HOST:PORT:BUSID --rp-state FILE --expect locked|unlocked
    locked.py --rp-state FILE --export-owner DIR

The key is the one rp.py --pin PIN --lock set up, power-cycled since (the runner restarted on
the same --state). FILE is rp.py's --state, which holds the site's legacy U2F registration (made
over CTAP1 before the lock was turned on, as AWS's U2F enrolment did).

- `locked`: getInfo says alwaysUv and leaves U2F_V2 out; a touch-only U2F register and an
  authenticate with the legacy key handle are refused with SW 0x6986 (conditions not satisfied:
  command not allowed) at once, without waiting for a touch (a key that waited would answer
  0x6985); a CTAP2 getAssertion without a token gets CTAP2_ERR_PUAT_REQUIRED.
- `unlocked` (after the browser's PIN, same power-up): getInfo says alwaysUv false and U2F_V2
  again, and a U2F authenticate with the legacy key handle signs; the signature is verified
  with the public key the site registered. The touch must be armed on the control socket.

- `--export-owner DIR`: no key; writes DIR/id (base64) and DIR/pem, the credential ID and
  public key of user `owner`'s newest credential (the one rp.py --lock made on this run's key),
  for the guest's libfido2 (tests/browser/locked-clients.sh).

Prints one line per check; exits 1 on the first that fails.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.ctap import CtapError
from fido2.ctap1 import ApduError, Ctap1
from fido2.ctap2 import Ctap2
from fido2.webauthn import AttestedCredentialData

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from usbip_hid import UsbIpError, open_device  # noqa: E402

# As rp.py: AWS's legacy U2F AppID, whose SHA-256 is the application parameter.
APP_ID = "https://signin.aws.amazon.com"
NOT_ALLOWED = "SW 0x6986"
PUAT_REQUIRED = "PUAT_REQUIRED (0x36)"


def check(ok: bool, what: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        sys.exit(1)


def refused(call) -> str:
    """The SW or CTAP error a call ended with (hex), or "answered" if it succeeded."""
    try:
        call()
    except ApduError as error:
        return f"SW {error.code:#06x}"
    except CtapError as error:
        return f"{error.code.name} ({error.code:#04x})"
    return "answered"


def export_owner(rp_state: Path, directory: Path) -> None:
    credential = AttestedCredentialData(bytes.fromhex(json.loads(rp_state.read_text())["credentials"]["owner"][-1]))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "id").write_text(base64.b64encode(credential.credential_id).decode() + "\n")
    # An ES256 COSE key (rp.py's site asks for ES256 first; the key makes ES256): x is -2, y -3.
    cose = credential.public_key
    point = ec.EllipticCurvePublicNumbers(
        int.from_bytes(cose[-2], "big"), int.from_bytes(cose[-3], "big"), ec.SECP256R1()
    ).public_key()
    pem = point.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (directory / "pem").write_bytes(pem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("key", nargs="?", help="HOST:PORT:BUSID")
    parser.add_argument("--rp-state", required=True, type=Path)
    parser.add_argument("--expect", choices=["locked", "unlocked"])
    parser.add_argument("--export-owner", type=Path, metavar="DIR")
    args = parser.parse_args()
    if args.export_owner:
        export_owner(args.rp_state, args.export_owner)
        return
    if not (args.key and args.expect):
        parser.error("HOST:PORT:BUSID and --expect, or --export-owner")

    legacy = json.loads(args.rp_state.read_text())["legacy"]["legacy-root"]
    credential = AttestedCredentialData(bytes.fromhex(legacy))
    app_param = hashlib.sha256(APP_ID.encode()).digest()
    host, port, bus_id = args.key.rsplit(":", 2)
    # Right after the guest ends, the runner may not have seen its connection close yet.
    for attempt in range(50):
        try:
            device = open_device(host, int(port), bus_id)
            break
        except UsbIpError:
            if attempt == 49:
                raise
            time.sleep(0.2)
    try:
        info = Ctap2(device).get_info()
        ctap1 = Ctap1(device)
        client_param = os.urandom(32)
        if args.expect == "locked":
            check(info.options.get("alwaysUv") is True, "locked: getInfo says alwaysUv")
            check("U2F_V2" not in info.versions, f"locked: getInfo's versions {info.versions} leave U2F_V2 out")
            answer = refused(lambda: ctap1.register(client_param, app_param))
            check(answer == NOT_ALLOWED, f"locked: a touch-only U2F register is refused: {answer}")
            answer = refused(lambda: ctap1.authenticate(client_param, app_param, credential.credential_id))
            check(answer == NOT_ALLOWED, f"locked: U2F authenticate with the site's key handle is refused: {answer}")
            allow = [{"type": "public-key", "id": credential.credential_id}]
            answer = refused(lambda: Ctap2(device).get_assertion(APP_ID, client_param, allow))
            check(answer == PUAT_REQUIRED, f"locked: CTAP2 getAssertion without a token is refused: {answer}")
        else:
            check(info.options.get("alwaysUv") is False, "unlocked: getInfo says alwaysUv false again")
            check("U2F_V2" in info.versions, f"unlocked: getInfo's versions {info.versions} list U2F_V2 again")
            signed = ctap1.authenticate(client_param, app_param, credential.credential_id)
            # U2F signs app param | flags and counter (5 bytes) | client param.
            credential.public_key.verify(app_param + bytes(signed)[:5] + client_param, signed.signature)
            check(True, f"unlocked: U2F authenticate with the site's key handle signs (counter {signed.counter}), verified")
    finally:
        device.close()


if __name__ == "__main__":
    main()

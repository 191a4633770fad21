"""The relying party of the browser tier: an HTTPS site whose WebAuthn ceremonies a real
browser runs against the key, verified server-side by Yubico's python-fido2 (Fido2Server).

It serves the page (tests/browser/page/) and four JSON endpoints under /api/, and checks every
response the way a careful RP would: client data (type, challenge, origin), rpIdHash, the UP
and UV flags, the signature, a signature counter that must grow, and for registrations the
packed attestation, which must chain to the vendor root in our own metadata statement
(`attestation metadata`) and name its AAGUID.

The site plays the AWS console's MFA pages: rp id `signin.aws.amazon.com`, one root user and
IAM users on the same key, and a legacy U2F credential (registered over CTAP1 before the
browser starts, as AWS's old U2F enrolment did) that signs in through the `appid` extension.

    rp.py --metadata M.json --cert-dir DIR [--u2f HOST:PORT:BUSID [--pin PIN [--lock]]]
          [--origin O] [--state FILE]

With --lock, the key also gets a WebAuthn credential for user `owner` (over CTAP2, before the
PIN is set), then the PIN and the PIN lock: a browser meets that account on a locked key.

With --state, the site keeps its users and their credentials in FILE, as a real site keeps them
in its database: a later run (another browser, another key) knows who registered before (and
tests/browser/locked.py finds the legacy U2F registration there). A
registration may ask for any authenticator (`anyAuthenticator`: attestation `none`, as most
sites ask), which is how a browser's virtual authenticator registers.

It prints `ready PORT SPKI` once listening on 127.0.0.1 (SPKI: base64 SHA-256 of the TLS key,
for Chromium's --ignore-certificate-errors-spki-list, which makes the browser trust the
certificate as it would a publicly issued one; for Firefox, DIR/rp-ca.pem is the CA to install
by policy), then serves until killed. GET /api/log
returns every verdict so far, so the driving test can show them.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import http.server
import json
import os
import ssl
import sys
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fido2.attestation import AttestationType, AttestationVerifier
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap1 import Ctap1
from fido2.ctap2 import Config, Ctap2
from fido2.ctap2.pin import ClientPin
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestedCredentialData,
    AuthenticationResponse,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
)

# The USB/IP connection of the python-fido2 tests (tests/python/usbip_hid.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from usbip_hid import open_device  # noqa: E402

RP_ID = "signin.aws.amazon.com"
# The AppID of AWS's legacy U2F enrolment (a FIDO AppID is a URL; its SHA-256 is the U2F
# application parameter, and the rpIdHash of an appid-extension sign-in).
APP_ID = "https://signin.aws.amazon.com"
PAGE = Path(__file__).resolve().parent / "page"
# authenticatorConfig vendorPrototype's vendorCommandId that turns the PIN lock on
# (docs/pin-lock.md).
LOCK_ON = 0x4C4F434B


class OurVendor(AttestationVerifier):
    """Attestation must chain to the root of our metadata statement and carry its AAGUID."""

    def __init__(self, metadata: dict):
        super().__init__()
        self.aaguid = bytes.fromhex(metadata["aaguid"].replace("-", ""))
        self.roots = [base64.b64decode(c) for c in metadata["attestationRootCertificates"]]

    def ca_lookup(self, result, auth_data):
        # Returning no root refuses the attestation. Self attestation has no chain to check
        # (python-fido2 would accept it against any root), so only a certificate chain counts.
        if result.attestation_type != AttestationType.BASIC or not result.trust_path:
            return None
        if auth_data.credential_data.aaguid != self.aaguid:
            return None
        return self.roots[0]


class Site:
    def __init__(self, origin: str, metadata: dict):
        rp = PublicKeyCredentialRpEntity(name="Amazon Web Services", id=RP_ID)
        self.origin = origin
        self.server = Fido2Server(
            rp,
            attestation="direct",
            verify_origin=lambda o: o == origin,
            verify_attestation=OurVendor(metadata),
        )
        # The appid sign-in is verified as if the AppID were the RP ID: Fido2Server compares the
        # rpIdHash with SHA-256 of its RP's id, which is then SHA-256 of the AppID.
        self.legacy_server = Fido2Server(
            PublicKeyCredentialRpEntity(name="AWS (U2F)", id=APP_ID),
            verify_origin=lambda o: o == origin,
        )
        # For registrations that ask for any authenticator: no attestation.
        self.open_server = Fido2Server(rp, attestation="none", verify_origin=lambda o: o == origin)
        self.state_file: Path | None = None
        self.users: dict[str, bytes] = {}  # name -> user handle
        self.credentials: dict[str, list[AttestedCredentialData]] = {}
        self.legacy: dict[str, AttestedCredentialData] = {}
        self.counters: dict[bytes, int] = {}
        self.pending: dict[str, tuple] = {}
        self.log: list[dict] = []
        self.lock = threading.Lock()

    def user_handle(self, name: str) -> bytes:
        # An opaque random handle per user, at the 64 bytes WebAuthn allows at most (AWS sends
        # opaque handles too); fixed per name, so a user registering twice keeps it.
        return self.users.setdefault(name, os.urandom(64))

    def register_begin(self, body: dict) -> dict:
        name = body["user"]
        user = PublicKeyCredentialUserEntity(id=self.user_handle(name), name=name, display_name=name)
        existing = self.credentials.get(name, [])
        # A passkey: discoverable, and verified (the key's PIN, typed into the browser).
        passkey = bool(body.get("passkey"))
        # "verify": the user verified (by the key's fingerprint sensor, say), not discoverable.
        verify = passkey or bool(body.get("verify"))
        server = self.open_server if body.get("anyAuthenticator") else self.server
        options, state = server.register_begin(
            user,
            credentials=existing,
            resident_key_requirement="required" if passkey else "discouraged",
            user_verification="required" if verify else "discouraged",
            authenticator_attachment="cross-platform",
        )
        self.pending[name] = ("register", state, server)
        options = dict(options)
        if body.get("timeout"):
            options["publicKey"]["timeout"] = int(body["timeout"])
        return options

    def register_complete(self, body: dict) -> dict:
        name = body["user"]
        kind, state, server = self.pending.pop(name)
        assert kind == "register"
        auth_data = server.register_complete(state, body["credential"])
        if not auth_data.is_user_present():
            raise ValueError("UP flag not set")
        if state["user_verification"] == "required" and not auth_data.is_user_verified():
            raise ValueError("UV flag not set")
        cred = auth_data.credential_data
        if any(cred.credential_id == c.credential_id for cs in self.credentials.values() for c in cs):
            raise ValueError("credential id seen before")
        self.credentials.setdefault(name, []).append(cred)
        self.counters[cred.credential_id] = auth_data.counter
        self.save()
        return {
            "verified": "registration",
            "user": name,
            "uv": auth_data.is_user_verified(),
            "aaguid": str(cred.aaguid),
            "counter": auth_data.counter,
            "attestation": "none asked" if server is self.open_server else "packed, chains to our root",
            "credentialId": base64.urlsafe_b64encode(cred.credential_id).decode().rstrip("="),
        }

    def authenticate_begin(self, body: dict) -> dict:
        if body.get("passkey"):
            # No allow list: the key offers its discoverable credentials for the RP, the browser
            # (here: the user at its prompt) picks one, and its user handle says who signed in.
            options, state = self.server.authenticate_begin(None, user_verification="required")
            self.pending["(passkey)"] = ("passkey", state)
            return dict(options)
        name = body["user"]
        if body.get("legacy"):
            cred = self.legacy[name]
            options, state = self.legacy_server.authenticate_begin([cred], user_verification="discouraged")
            options = dict(options)
            # The page asks as the WebAuthn RP; the browser falls back to the AppID (§10.1.1).
            options["publicKey"]["rpId"] = RP_ID
            options["publicKey"]["extensions"] = {"appid": APP_ID}
            self.pending[name] = ("legacy", state)
            return options
        creds = self.credentials[name]
        verify = "required" if body.get("verify") else "discouraged"
        options, state = self.server.authenticate_begin(creds, user_verification=verify)
        self.pending[name] = ("authenticate", state)
        return dict(options)

    def authenticate_complete(self, body: dict) -> dict:
        response = AuthenticationResponse.from_dict(body["credential"])
        if body.get("passkey"):
            kind, state = self.pending.pop("(passkey)")
            handle = response.response.user_handle
            name = next((n for n, h in self.users.items() if h == handle), None)
            if name is None:
                raise ValueError("unknown user handle")
        else:
            name = body["user"]
            kind, state = self.pending.pop(name)
        if kind == "legacy":
            if response.client_extension_results.get("appid") is not True:
                raise ValueError("the browser did not report appid: true")
            cred = self.legacy_server.authenticate_complete(state, [self.legacy[name]], response)
        else:
            # Only this user's credentials: another user's credential on the same key must fail.
            cred = self.server.authenticate_complete(state, self.credentials[name], response)
        auth_data = response.response.authenticator_data
        if not auth_data.is_user_present():
            raise ValueError("UP flag not set")
        # (Fido2Server already refuses a response without UV when the state required it.)
        if (kind == "passkey" or state["user_verification"] == "required") and not auth_data.is_user_verified():
            raise ValueError("UV flag not set")
        last = self.counters.get(cred.credential_id, -1)
        if auth_data.counter <= last:
            raise ValueError(f"signature counter went from {last} to {auth_data.counter}")
        self.counters[cred.credential_id] = auth_data.counter
        self.save()
        verdicts = {"legacy": "legacy U2F sign-in via appid", "passkey": "passkey sign-in"}
        return {
            "verified": verdicts.get(kind, "sign-in"),
            "user": name,
            "uv": auth_data.is_user_verified(),
            "counter": auth_data.counter,
        }

    def load(self, path: Path) -> None:
        """The users, credentials and counters of an earlier run (--state), if any."""
        self.state_file = path
        if not path.exists():
            return
        state = json.loads(path.read_text())
        self.users = {name: bytes.fromhex(h) for name, h in state["users"].items()}
        self.credentials = {
            name: [AttestedCredentialData(bytes.fromhex(c)) for c in creds]
            for name, creds in state["credentials"].items()
        }
        self.legacy = {name: AttestedCredentialData(bytes.fromhex(c)) for name, c in state.get("legacy", {}).items()}
        self.counters = {bytes.fromhex(i): n for i, n in state["counters"].items()}

    def save(self) -> None:
        if self.state_file is None:
            return
        state = {
            "users": {name: h.hex() for name, h in self.users.items()},
            "credentials": {name: [bytes(c).hex() for c in cs] for name, cs in self.credentials.items()},
            "legacy": {name: bytes(c).hex() for name, c in self.legacy.items()},
            "counters": {bytes(i).hex(): n for i, n in self.counters.items()},
        }
        self.state_file.write_text(json.dumps(state))

    def enroll_u2f(self, device, name: str) -> None:
        """Register a U2F credential over CTAP1, as AWS's pre-WebAuthn enrolment did."""
        app_param = hashlib.sha256(APP_ID.encode()).digest()
        client_param = os.urandom(32)
        registration = Ctap1(device).register(client_param, app_param)
        registration.verify(app_param, client_param)
        cred = AttestedCredentialData.from_ctap1(registration.key_handle, registration.public_key)
        self.legacy[name] = cred
        self.counters[cred.credential_id] = -1
        self.save()

    def enroll_webauthn(self, device, name: str) -> None:
        """Register a WebAuthn credential (not discoverable, UV discouraged: a security key as
        MFA) through this site's own ceremony, with python-fido2 as the client: the owner's
        account from before the PIN lock was turned on, which a browser then meets locked."""
        options = self.register_begin({"user": name})
        client = Fido2Client(device, DefaultClientDataCollector(self.origin), UserInteraction())
        response = client.make_credential(options["publicKey"])
        self.register_complete({"user": name, "credential": response})


def tls_certificate(directory: Path) -> tuple[Path, Path, str]:
    """A throwaway CA and the RP's certificate from it; returns the certificate and key files and
    the SPKI hash of the RP's key. Chromium trusts the RP by that hash
    (--ignore-certificate-errors-spki-list); Firefox, which refuses WebAuthn on a site whose
    certificate error was merely overridden, trusts the CA (rp-ca.pem) through an enterprise
    policy, as a company's own CA would be."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, public_key, signer, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(RP_ID)]), critical=False
            ).add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Browser tier test CA")])
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, RP_ID)])
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    cert = certificate(name, ca_name, key.public_key(), ca_key, ca=False)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rp-ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = directory / "rp-cert.pem", directory / "rp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return cert_file, key_file, base64.b64encode(hashlib.sha256(spki).digest()).decode()


def handler_for(site_ref: list):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            pass  # verdicts go to the site's log; one line per request is noise

        def reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            site = site_ref[0]
            if self.path == "/api/log":
                with site.lock:
                    return self.reply(200, json.dumps(site.log).encode(), "application/json")
            files = {"/": "index.html", "/webauthn.js": "webauthn.js"}
            if self.path not in files:
                return self.reply(404, b"not found", "text/plain")
            kind = "text/html" if self.path == "/" else "text/javascript"
            self.reply(200, (PAGE / files[self.path]).read_bytes(), kind + "; charset=utf-8")

        def do_POST(self):
            site = site_ref[0]
            routes = {
                "/api/register/begin": site.register_begin,
                "/api/register/complete": site.register_complete,
                "/api/authenticate/begin": site.authenticate_begin,
                "/api/authenticate/complete": site.authenticate_complete,
            }
            route = routes.get(self.path)
            if route is None:
                return self.reply(404, b"not found", "text/plain")
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with site.lock:
                try:
                    result = route(body)
                    status = 200
                except Exception as error:  # every refusal is a verdict the test reads
                    result = {"error": f"{type(error).__name__}: {error}"}
                    status = 400
                if self.path.endswith("/complete") or status != 200:
                    site.log.append({"path": self.path, "user": body.get("user"), **result})
            self.reply(status, json.dumps(result).encode(), "application/json")

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metadata", required=True, help="our metadata statement (attestation metadata)")
    parser.add_argument("--cert-dir", required=True, type=Path, help="where the TLS certificate goes")
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    parser.add_argument("--u2f", help="HOST:PORT:BUSID of the key: enrol a legacy U2F credential first")
    parser.add_argument("--pin", help="set this PIN on the key (at --u2f) first")
    parser.add_argument(
        "--lock", action="store_true", help="register user owner over CTAP2 and turn the key's PIN lock on"
    )
    parser.add_argument("--state", type=Path, help="keep users and credentials in this file")
    parser.add_argument(
        "--origin",
        help=f"the origin browsers see (default https://{RP_ID}:PORT; the guest relays :443 here)",
    )
    args = parser.parse_args()

    cert_file, key_file, spki = tls_certificate(args.cert_dir)
    site_ref: list = [None]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(site_ref))
    port = server.server_address[1]
    origin = args.origin or f"https://{RP_ID}:{port}"
    site = Site(origin, json.loads(Path(args.metadata).read_text()))
    site_ref[0] = site
    if args.state:
        site.load(args.state)
    if args.u2f:
        # One USB/IP connection, closed before the browser's guest attaches the key.
        key_host, key_port, bus_id = args.u2f.rsplit(":", 2)
        device = open_device(key_host, int(key_port), bus_id)
        try:
            site.enroll_u2f(device, "legacy-root")
            if args.lock:
                site.enroll_webauthn(device, "owner")
            if args.pin:
                # As the key's owner would have, before using it with the site.
                ctap = Ctap2(device)
                client_pin = ClientPin(ctap)
                client_pin.set_pin(args.pin)
                if args.lock:
                    # The PIN lock, as docs/pin-lock.md tells an owner to turn it on: from the
                    # next power-up the key waits for its PIN before anything needs a secret.
                    token = client_pin.get_pin_token(args.pin, ClientPin.PERMISSION.AUTHENTICATOR_CFG)
                    Config(ctap, client_pin.protocol, token)._call(Config.CMD.VENDOR_PROTOTYPE, {1: LOCK_ON})
        finally:
            device.close()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"ready {port} {spki}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

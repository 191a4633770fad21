"""Built-in user verification (`--uv builtin`, a simulated fingerprint sensor) with Yubico's
python-fido2 over USB/IP: its client obtains a UV token (getPinUvAuthTokenUsingUvWithPermissions)
and the RP (Fido2Server) requires and sees the UV flag; every finger answered on the control
socket (`uv ok|fail`, `uv auto|deny`, `uv enroll|unenroll`), each failure counted (getUVRetries,
uvCountSinceLastPinEntry), and once blocked python-fido2 falls back to the PIN, which restores
the retries."""

from __future__ import annotations

import threading

import pytest
from conftest import RunningKey
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin
from fido2.server import Fido2Server
from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity
from keyctl import control, wait_for

RP = PublicKeyCredentialRpEntity(name="Example", id="example.com")
ORIGIN = "https://example.com"
PIN = "fingers crossed"


class User(UserInteraction):
    """Counts the key's calls for the user (keepalive UPNEEDED) and knows the PIN."""

    def __init__(self, pin: str | None = None):
        self.pin = pin
        self.touches_asked = 0
        self.pins_asked = 0

    def prompt_up(self) -> None:
        self.touches_asked += 1

    def request_pin(self, permissions, rp_id):
        self.pins_asked += 1
        return self.pin


def client(device, user: UserInteraction | None = None) -> Fido2Client:
    return Fido2Client(device, DefaultClientDataCollector(ORIGIN), user or User())


def register(server: Fido2Server, fido: Fido2Client, name: str, **selection):
    user = PublicKeyCredentialUserEntity(id=name.encode(), name=name, display_name=name)
    options, state = server.register_begin(user, user_verification="required", **selection)
    return server.register_complete(state, fido.make_credential(options.public_key))


def uv_retries(device) -> int:
    return ClientPin(Ctap2(device)).get_uv_retries()


@pytest.fixture
def sensor_key(tmp_path):
    """A key with a fingerprint sensor whose every finger the test gives (--uv-mode control),
    touches approved at once."""
    sock = tmp_path / "control.sock"
    key = RunningKey("--ephemeral", "--presence", "auto", "--uv", "builtin", "--uv-mode", "control", "--control", str(sock))
    device = key.device()
    yield device, sock
    device.close()
    key.stop()


def test_get_info_reports_the_sensor():
    key = RunningKey("--ephemeral", "--presence", "auto", "--uv", "builtin")
    device = key.device()
    info = Ctap2(device).get_info()
    assert info.options["uv"] is True, "enrolled at start"
    assert info.options["pinUvAuthToken"] is True
    assert "bioEnroll" not in info.options and "uvBioEnroll" not in info.options
    assert info.uv_modality == 0x02, "fingerprint"
    assert info.preferred_platform_uv_attempts == 3
    assert info.uv_count_since_pin == 0
    assert uv_retries(device) == 5
    device.close()
    key.stop()


def test_passkeys_registered_and_used_with_the_sensor():
    key = RunningKey("--ephemeral", "--presence", "auto", "--uv", "builtin")
    device = key.device()
    server, fido = Fido2Server(RP), client(device)
    for name in ["alice", "bob"]:
        auth_data = register(server, fido, name, resident_key_requirement="required")
        assert auth_data.is_user_verified() and auth_data.is_user_present()
    # Discoverable sign-in, UV required: Fido2Server refuses a response without the UV flag.
    options, state = server.authenticate_begin(user_verification="required")
    result = fido.get_assertion(options.public_key)
    assert {a.user["name"] for a in result.get_assertions()} == {"alice", "bob"}, "verified: names"
    response = result.get_response(0)
    assert response.response.authenticator_data.is_user_verified()
    assert Ctap2(device).get_info().uv_count_since_pin == 3, "one finger per ceremony"
    device.close()
    key.stop()


def run(target, *args):
    """Run a ceremony in the background: (thread, outcome dict with 'result' or 'error')."""
    outcome: dict = {}

    def body():
        try:
            outcome["result"] = target(*args)
        except Exception as error:  # the test inspects it
            outcome["error"] = error

    thread = threading.Thread(target=body)
    thread.start()
    return thread, outcome


def test_each_finger_is_given_on_the_control_socket(sensor_key):
    device, sock = sensor_key
    server, user = Fido2Server(RP), User()
    fido = client(device, user)
    thread, outcome = run(register, server, fido, "carol")
    wait_for(sock, "uv status")
    assert control(sock, "status") == "waiting", "a finger, not a touch, is awaited"
    assert control(sock, "uv ok") == "ok waiting"
    thread.join(timeout=10)
    assert outcome["result"].is_user_verified()
    assert user.touches_asked >= 1, "keepalive UPNEEDED while the sensor waited"
    assert control(sock, "uv status") == "waiting"

    # A finger that does not match: python-fido2 reports the key's UV_INVALID; one retry spent.
    thread, outcome = run(register, server, fido, "dave")
    wait_for(sock, "uv status")
    assert control(sock, "uv fail 1-1") == "ok waiting"
    thread.join(timeout=10)
    error = outcome["error"]
    assert isinstance(error, ClientError) and isinstance(error.cause, CtapError)
    assert error.cause.code == CtapError.ERR.UV_INVALID
    assert uv_retries(device) == 4

    # An answer given before the key asks is kept for the next finger ("armed").
    assert control(sock, "uv ok") == "ok armed"
    assert register(server, fido, "dave").is_user_verified()
    assert uv_retries(device) == 5, "a match restores the retries"
    assert Ctap2(device).get_info().uv_count_since_pin == 3


def test_a_blocked_sensor_sends_python_fido2_to_the_pin(sensor_key):
    device, sock = sensor_key
    ClientPin(Ctap2(device)).set_pin(PIN)
    server, user = Fido2Server(RP), User(PIN)
    fido = client(device, user)
    # W3C "Set User Verified" false: every finger fails from now on.
    assert control(sock, "uv deny") == "ok uv deny"
    for left in [4, 3, 2, 1]:
        with pytest.raises(ClientError) as error:
            register(server, fido, "erin")
        assert error.value.cause.code == CtapError.ERR.UV_INVALID
        assert uv_retries(device) == left
    assert user.pins_asked == 0
    # The fifth failure blocks the sensor (UV_BLOCKED): python-fido2 asks for the PIN instead,
    # and the correct PIN unblocks it (§6.5.2.2).
    auth_data = register(server, fido, "erin")
    assert auth_data.is_user_verified(), "verified by the PIN"
    assert user.pins_asked == 1
    assert uv_retries(device) == 5
    assert Ctap2(device).get_info().uv_count_since_pin == 0
    assert control(sock, "uv auto") == "ok uv auto"
    assert register(server, fido, "frank").is_user_verified()
    assert user.pins_asked == 1, "the sensor again, no PIN"


def test_enrolment_is_switched_on_the_control_socket(sensor_key):
    device, sock = sensor_key
    assert control(sock, "uv unenroll") == "ok uv unenrolled"
    assert Ctap2(device).get_info().options["uv"] is False
    with pytest.raises(ClientError) as error:
        register(Fido2Server(RP), client(device), "gina")
    assert error.value.code == ClientError.ERR.CONFIGURATION_UNSUPPORTED, "no finger, no PIN"
    assert control(sock, "uv enroll") == "ok uv enrolled"
    assert control(sock, "uv ok") == "ok armed"
    assert register(Fido2Server(RP), client(device), "gina").is_user_verified()


def test_bad_control_lines_are_refused(sensor_key):
    _, sock = sensor_key
    assert control(sock, "uv maybe").startswith("error uv takes")
    assert control(sock, "uv ok 9-9") == 'error unknown bus id "9-9"'
    assert control(sock, "presence prompt").startswith("error presence takes")
    assert control(sock, "fault wrong-kind").startswith("error fault takes")

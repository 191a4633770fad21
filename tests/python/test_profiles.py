"""Personas (`--profile`) with Yubico's python-fido2 over USB/IP, each met as a relying party
meets such a key in the field: python-fido2's client picks its protocol from what the key says
(CTAPHID capabilities, getInfo) and Fido2Server verifies the result. Also the presence mode
switched at run time on the control socket (`presence auto|deny|control`)."""

from __future__ import annotations

import threading

import pytest
from conftest import RunningKey
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin
from fido2.hid import CAPABILITY
from fido2.server import Fido2Server
from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity
from keyctl import control, wait_for

RP = PublicKeyCredentialRpEntity(name="Example", id="example.com")
PIN = "persona"


class Pin(UserInteraction):
    def request_pin(self, permissions, rp_id):
        return PIN


def client(device, user: UserInteraction | None = None) -> Fido2Client:
    return Fido2Client(device, DefaultClientDataCollector("https://example.com"), user or UserInteraction())


def register(fido: Fido2Client, server: Fido2Server, name: str, **selection):
    """(python-fido2's client refuses "preferred" UV on a key that could have a PIN but has
    none: the RP here says what it needs, "discouraged" unless told.)"""
    selection.setdefault("user_verification", "discouraged")
    user = PublicKeyCredentialUserEntity(id=name.encode(), name=name, display_name=name)
    options, state = server.register_begin(user, **selection)
    return server.register_complete(state, fido.make_credential(options.public_key))


def sign_in(fido: Fido2Client, server: Fido2Server, credentials, **kwargs):
    kwargs.setdefault("user_verification", "discouraged")
    options, state = server.authenticate_begin(credentials, **kwargs)
    response = fido.get_assertion(options.public_key).get_response(0)
    server.authenticate_complete(state, credentials, response)
    return response.response.authenticator_data


@pytest.fixture
def persona(request):
    key = RunningKey("--ephemeral", "--presence", "auto", "--profile", request.param)
    device = key.device()
    yield device
    device.close()
    key.stop()


@pytest.mark.parametrize("persona", ["u2f-only"], indirect=True)
def test_u2f_only_is_a_u2f_key_to_python_fido2(persona):
    assert not persona.capabilities & CAPABILITY.CBOR, "INIT: no CBOR capability"
    with pytest.raises(ValueError):
        Ctap2(persona)
    # The client falls back to U2F (fido-u2f attestation) and the RP verifies it.
    server, fido = Fido2Server(RP, attestation="direct"), client(persona)
    user = PublicKeyCredentialUserEntity(id=b"u", name="u", display_name="u")
    options, state = server.register_begin(user, user_verification="discouraged")
    response = fido.make_credential(options.public_key)
    assert response.response.attestation_object.fmt == "fido-u2f"
    auth_data = server.register_complete(state, response)
    assert sign_in(fido, server, [auth_data.credential_data], user_verification="discouraged").is_user_present()
    with pytest.raises(ClientError) as error:
        register(fido, server, "v", resident_key_requirement="required")
    assert error.value.code == ClientError.ERR.CONFIGURATION_UNSUPPORTED


@pytest.mark.parametrize("persona", ["ctap20-no-pin"], indirect=True)
def test_ctap20_without_pin(persona):
    info = Ctap2(persona).get_info()
    assert info.versions == ["U2F_V2", "FIDO_2_0"]
    assert "clientPin" not in info.options and not ClientPin.is_supported(info)
    assert info.pin_uv_protocols == [] and info.extensions == []
    assert info.options == {"rk": True, "up": True, "plat": False}
    server, fido = Fido2Server(RP), client(persona)
    auth_data = register(fido, server, "u", resident_key_requirement="required", user_verification="discouraged")
    assert not auth_data.is_user_verified()
    options, state = server.authenticate_begin(user_verification="discouraged")
    result = fido.get_assertion(options.public_key)
    server.authenticate_complete(state, [auth_data.credential_data], result.get_response(0))
    # No way to verify the user: an RP that requires it is told so by the client.
    with pytest.raises(ClientError) as error:
        register(fido, server, "w", user_verification="required")
    assert error.value.code == ClientError.ERR.CONFIGURATION_UNSUPPORTED


@pytest.mark.parametrize("persona", ["no-rk"], indirect=True)
def test_no_rk(persona):
    info = Ctap2(persona).get_info()
    assert info.options["rk"] is False
    assert "credMgmt" not in info.options and "largeBlobs" not in info.options
    assert info.remaining_disc_creds is None
    server, fido = Fido2Server(RP), client(persona)
    with pytest.raises(ClientError) as error:
        register(fido, server, "u", resident_key_requirement="required")
    assert error.value.code == ClientError.ERR.CONFIGURATION_UNSUPPORTED
    # "preferred": the client asks for none, and the RP gets a non-discoverable credential.
    auth_data = register(fido, server, "u", resident_key_requirement="preferred")
    assert sign_in(fido, server, [auth_data.credential_data]).is_user_present()


@pytest.mark.parametrize("persona", ["always-uv"], indirect=True)
def test_always_uv_needs_the_pin_for_everything(persona):
    info = Ctap2(persona).get_info()
    assert info.options["alwaysUv"] is True and info.options["makeCredUvNotRqd"] is False
    assert "U2F_V2" not in info.versions
    server = Fido2Server(RP)
    with pytest.raises(ClientError) as error:
        register(client(persona), server, "u", user_verification="discouraged")
    assert error.value.code == ClientError.ERR.CONFIGURATION_UNSUPPORTED, "no PIN yet"
    ClientPin(Ctap2(persona)).set_pin(PIN)
    fido = client(persona, Pin())
    auth_data = register(fido, server, "u", user_verification="discouraged")
    assert auth_data.is_user_verified(), "verified although the RP did not ask"
    assert sign_in(fido, server, [auth_data.credential_data], user_verification="discouraged").is_user_verified()


def test_always_uv_with_a_sensor_verifies_with_the_finger():
    key = RunningKey("--ephemeral", "--presence", "auto", "--profile", "always-uv", "--uv", "builtin")
    device = key.device()
    server, fido = Fido2Server(RP), client(device)
    auth_data = register(fido, server, "u", user_verification="discouraged")
    assert auth_data.is_user_verified()
    assert sign_in(fido, server, [auth_data.credential_data], user_verification="discouraged").is_user_verified()
    device.close()
    key.stop()


def test_presence_mode_switched_at_run_time(tmp_path):
    sock = tmp_path / "control.sock"
    key = RunningKey("--ephemeral", "--presence", "deny", "--control", str(sock))
    device = key.device()
    server, fido = Fido2Server(RP), client(device)
    with pytest.raises(ClientError) as error:
        register(fido, server, "u")
    assert error.value.cause.code == CtapError.ERR.OPERATION_DENIED
    # W3C/CDP setAutomaticPresenceSimulation(true): every touch approved from now on.
    assert control(sock, "presence auto") == "ok presence auto"
    auth_data = register(fido, server, "u")
    assert control(sock, "status") == "waiting", "auto: nothing waits"
    # control: the script answers each touch.
    assert control(sock, "presence control 1-1") == "ok presence control"
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(data=sign_in(fido, server, [auth_data.credential_data])))
    thread.start()
    wait_for(sock, "status")
    assert control(sock, "approve") == "ok waiting"
    thread.join(timeout=10)
    assert outcome["data"].is_user_present()
    assert control(sock, "presence deny") == "ok presence deny"
    with pytest.raises(ClientError) as error:
        sign_in(fido, server, [auth_data.credential_data])
    assert error.value.cause.code == CtapError.ERR.OPERATION_DENIED
    device.close()
    key.stop()

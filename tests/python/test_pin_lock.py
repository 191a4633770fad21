"""The PIN lock through python-fido2, over USB/IP: turned on with authenticatorConfig's
vendorPrototype, it makes the key ask for its PIN after every power-up (alwaysUv, no U2F), and
python-fido2's client then asks for the PIN and signs in. See docs/pin-lock.md."""

from __future__ import annotations

import pytest
from conftest import RunningKey
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import CtapError
from fido2.ctap1 import Ctap1, ApduError
from fido2.ctap2 import Config, Ctap2
from fido2.ctap2.pin import ClientPin
from fido2.server import Fido2Server
from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity

PIN = "correct horse"
LOCK_ON = 0x4C4F434B
LOCK_OFF = 0x4F50454E


class PinInteraction(UserInteraction):
    def __init__(self, pin):
        self.pin = pin
        self.asked = 0

    def request_pin(self, permissions, rp_id):
        self.asked += 1
        return self.pin


def lock(device, vendor_command_id):
    """What docs/pin-lock.md tells an owner to run."""
    ctap = Ctap2(device)
    client_pin = ClientPin(ctap)
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.AUTHENTICATOR_CFG)
    Config(ctap, client_pin.protocol, token)._call(Config.CMD.VENDOR_PROTOTYPE, {1: vendor_command_id})


def test_a_locked_key_asks_for_its_pin_after_power_up(tmp_path):
    state = ["--state", str(tmp_path), "--presence", "auto"]
    server = Fido2Server(PublicKeyCredentialRpEntity(id="example.com", name="Example"))
    key = RunningKey(*state)
    device = key.device()
    info = Ctap2(device).get_info()
    assert info.vendor_prototype_config_commands == [LOCK_ON, LOCK_OFF]
    ClientPin(Ctap2(device)).set_pin(PIN)
    lock(device, LOCK_ON)
    interaction = PinInteraction(PIN)
    client = Fido2Client(device, DefaultClientDataCollector("https://example.com"), interaction)
    options, reg_state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"user-1", name="alice"), user_verification="discouraged"
    )
    credential = server.register_complete(reg_state, client.make_credential(options.public_key)).credential_data
    device.close()
    key.stop()

    # Power-up: locked. getInfo says alwaysUv and drops U2F_V2; touch-only requests are refused.
    key = RunningKey(*state)
    device = key.device()
    info = Ctap2(device).get_info()
    assert info.options["alwaysUv"] is True
    assert "U2F_V2" not in info.versions
    with pytest.raises(ApduError) as error:
        Ctap1(device).get_version()
    assert error.value.code == 0x6986
    with pytest.raises(CtapError) as error:
        Ctap2(device).get_assertion("example.com", b"\x01" * 32, [{"type": "public-key", "id": credential.credential_id}])
    assert error.value.code == CtapError.ERR.PUAT_REQUIRED

    # python-fido2's client sees alwaysUv, asks for the PIN, and signs in (UV set).
    interaction = PinInteraction(PIN)
    client = Fido2Client(device, DefaultClientDataCollector("https://example.com"), interaction)
    options, auth_state = server.authenticate_begin([credential], user_verification="discouraged")
    response = client.get_assertion(options.public_key).get_response(0)
    server.authenticate_complete(auth_state, [credential], response)
    assert interaction.asked >= 1, "the client asked for the PIN"
    assert response.response.authenticator_data.is_user_verified()
    assert Ctap2(device).get_info().options["alwaysUv"] is False, "open until power-off"

    # Off again: the next power-up is not locked.
    lock(device, LOCK_OFF)
    device.close()
    key.stop()
    key = RunningKey(*state)
    device = key.device()
    assert Ctap2(device).get_info().options["alwaysUv"] is False
    assert Ctap1(device).get_version() == "U2F_V2"
    device.close()
    key.stop()

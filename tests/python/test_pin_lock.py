"""The PIN lock through python-fido2, over USB/IP: turned on with authenticatorConfig's
vendorPrototype, it makes the key ask for its PIN after every power-up (alwaysUv, no U2F), and
python-fido2's client then asks for the PIN and signs in. See docs/pin-lock.md."""

from __future__ import annotations

import pytest
from conftest import RunningKey
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client, UserInteraction
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


VAULT = 4096 * 4096
SLOT = 8192


def spoil_vault(state_file):
    """Both slots hold the key's record, each with a byte changed: what bit rot or someone with
    the state file leaves, and no power cut does."""
    image = bytearray(state_file.read_bytes())
    slots = [VAULT, VAULT + SLOT]
    record = next(s for s in slots if image[s : s + 8] == b"OFKVAULT")
    other = next(s for s in slots if s != record)
    image[record + 40] ^= 1
    image[other : other + SLOT] = image[record : record + SLOT]
    image[other + 41] ^= 1
    state_file.write_bytes(bytes(image))


def test_a_spoiled_vault_is_refused_until_reset(tmp_path):
    """python-fido2's view of a key whose vault will not read (docs/pin-lock.md): getInfo
    answers, everything else raises CtapError VENDOR_FIRST (0xF0), the client's sign-in fails
    with that cause instead of "no credentials", and a reset gives a working key."""
    state = ["--state", str(tmp_path), "--presence", "auto"]
    server = Fido2Server(PublicKeyCredentialRpEntity(id="example.com", name="Example"))
    key = RunningKey(*state)
    device = key.device()
    ClientPin(Ctap2(device)).set_pin(PIN)
    client = Fido2Client(device, DefaultClientDataCollector("https://example.com"), PinInteraction(PIN))
    options, reg_state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"user-1", name="alice"), resident_key_requirement="required"
    )
    credential = server.register_complete(reg_state, client.make_credential(options.public_key)).credential_data
    device.close()
    key.stop()
    spoil_vault(tmp_path / "state.lfs")

    key = RunningKey(*state)
    device = key.device()
    info = Ctap2(device).get_info()
    assert info.options["clientPin"] is True
    assert info.remaining_disc_creds == 0
    for allow in ([{"type": "public-key", "id": credential.credential_id}], None):
        with pytest.raises(CtapError) as error:
            Ctap2(device).get_assertion("example.com", b"\x01" * 32, allow)
        assert error.value.code == CtapError.ERR.VENDOR_FIRST
    with pytest.raises(CtapError) as error:
        ClientPin(Ctap2(device)).set_pin("a new pin")
    assert error.value.code == CtapError.ERR.VENDOR_FIRST
    with pytest.raises(ApduError) as error:
        Ctap1(device).get_version()
    assert error.value.code == 0x6F00
    client = Fido2Client(device, DefaultClientDataCollector("https://example.com"), PinInteraction(PIN))
    options, _ = server.authenticate_begin([credential], user_verification="discouraged")
    with pytest.raises(ClientError) as error:
        client.get_assertion(options.public_key)
    assert isinstance(error.value.cause, CtapError), error.value
    assert error.value.cause.code == CtapError.ERR.VENDOR_FIRST

    # authenticatorReset within 10 s of start, with a touch: a working blank key.
    Ctap2(device).reset()
    assert Ctap2(device).get_info().options["clientPin"] is False
    client = Fido2Client(device, DefaultClientDataCollector("https://example.com"), PinInteraction(PIN))
    options, reg_state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"user-2", name="bob"), user_verification="discouraged"
    )
    credential = server.register_complete(reg_state, client.make_credential(options.public_key)).credential_data
    options, auth_state = server.authenticate_begin([credential], user_verification="discouraged")
    response = client.get_assertion(options.public_key).get_response(0)
    server.authenticate_complete(auth_state, [credential], response)
    device.close()
    key.stop()

"""PIN/UV auth with python-fido2's ClientPin and Fido2Client, over USB/IP."""

from __future__ import annotations

import os

import pytest
from conftest import RunningKey
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import CtapError
from fido2.ctap2 import Config, Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV1, PinProtocolV2
from fido2.server import Fido2Server
from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity

PIN = "correct horse"


class PinInteraction(UserInteraction):
    def __init__(self, pin):
        self.pin = pin
        self.asked = 0

    def request_pin(self, permissions, rp_id):
        self.asked += 1
        return self.pin


@pytest.mark.parametrize("protocol", [PinProtocolV1, PinProtocolV2])
def test_set_change_and_use_a_pin(device, protocol):
    ctap2 = Ctap2(device)
    client_pin = ClientPin(ctap2, protocol())
    assert client_pin.get_pin_retries()[0] == 8, "getPINRetries needs no PIN and no touch"
    assert ctap2.get_info().options["clientPin"] is False
    client_pin.set_pin(PIN)
    assert Ctap2(device).get_info().options["clientPin"] is True
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, "example.com")
    assert len(token) == 32
    client_pin.change_pin(PIN, "another pin")
    with pytest.raises(CtapError) as error:
        client_pin.get_pin_token(PIN)
    assert error.value.code == CtapError.ERR.PIN_INVALID
    assert client_pin.get_pin_retries()[0] == 7, "a wrong PIN costs one retry"
    client_pin.get_pin_token("another pin")
    assert client_pin.get_pin_retries()[0] == 8, "a right PIN restores them"
    with pytest.raises(CtapError) as error:
        client_pin.set_pin("x" * 64)
    assert error.value.code in (CtapError.ERR.NOT_ALLOWED, CtapError.ERR.PIN_POLICY_VIOLATION)


def test_user_verification_required_uses_the_pin(device):
    ClientPin(Ctap2(device)).set_pin(PIN)
    rp = PublicKeyCredentialRpEntity(name="Example", id="example.com")
    server = Fido2Server(rp)
    interaction = PinInteraction(PIN)
    client = Fido2Client(device, DefaultClientDataCollector("https://example.com"), interaction)
    user = PublicKeyCredentialUserEntity(id=b"alice", name="alice", display_name="Alice")
    options, state = server.register_begin(user, user_verification="required", resident_key_requirement="required")
    auth_data = server.register_complete(state, client.make_credential(options.public_key))
    assert auth_data.is_user_verified()
    options, state = server.authenticate_begin([auth_data.credential_data], user_verification="required")
    result = client.get_assertion(options.public_key)
    response = result.get_response(0)
    server.authenticate_complete(state, [auth_data.credential_data], response)
    assert response.response.authenticator_data.is_user_verified()
    assert interaction.asked >= 2
    # The wrong PIN fails and costs a retry.
    bad = Fido2Client(device, DefaultClientDataCollector("https://example.com"), PinInteraction("wrong pin"))
    with pytest.raises(ClientError):
        bad.get_assertion(server.authenticate_begin([auth_data.credential_data], user_verification="required")[0].public_key)
    assert ClientPin(Ctap2(device)).get_pin_retries()[0] == 7


def test_three_wrong_pins_need_a_power_cycle(tmp_path):
    state = ["--state", str(tmp_path), "--presence", "auto"]
    key = RunningKey(*state)
    device = key.device()
    ClientPin(Ctap2(device)).set_pin(PIN)
    for attempt in range(3):
        with pytest.raises(CtapError) as error:
            ClientPin(Ctap2(device)).get_pin_token("nope")
        expected = CtapError.ERR.PIN_AUTH_BLOCKED if attempt == 2 else CtapError.ERR.PIN_INVALID
        assert error.value.code == expected, f"attempt {attempt + 1}"
    retries, power_cycle = ClientPin(Ctap2(device)).get_pin_retries()
    assert retries == 5 and power_cycle is True
    with pytest.raises(CtapError) as error:
        ClientPin(Ctap2(device)).get_pin_token(PIN)
    assert error.value.code == CtapError.ERR.PIN_AUTH_BLOCKED, "even the right PIN waits for a power cycle"
    device.close()
    key.stop()
    key = RunningKey(*state)
    device = key.device()
    ClientPin(Ctap2(device)).get_pin_token(PIN)
    assert ClientPin(Ctap2(device)).get_pin_retries()[0] == 8
    device.close()
    key.stop()


def test_config_always_uv_and_min_pin_length(device):
    ctap2 = Ctap2(device)
    client_pin = ClientPin(ctap2)
    client_pin.set_pin(PIN)
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.AUTHENTICATOR_CFG)
    config = Config(ctap2, client_pin.protocol, token)
    config.toggle_always_uv()
    info = Ctap2(device).get_info()
    assert info.options["alwaysUv"] is True
    assert "U2F_V2" not in info.versions
    config.set_min_pin_length(min_pin_length=8, rp_ids=["example.com"])
    info = Ctap2(device).get_info()
    assert info.min_pin_length == 8
    assert info.force_pin_change is False, "the 13-character PIN is long enough"
    config.set_min_pin_length(min_pin_length=16)
    assert Ctap2(device).get_info().force_pin_change is True, "now it is too short"
    with pytest.raises(CtapError) as error:
        client_pin.get_pin_token(PIN)
    assert error.value.code == CtapError.ERR.PIN_POLICY_VIOLATION
    client_pin.change_pin(PIN, "a much longer passphrase")
    assert Ctap2(device).get_info().force_pin_change is False


def test_pin_complexity_policy(device):
    """CTAP 2.2's pinComplexityPolicy: off but available, turned on through setMinPINLength,
    enforced on changePIN with PIN_POLICY_VIOLATION, and told to the RPs allowed to see the
    minimum PIN length by the pinComplexityPolicy extension (attestation verified)."""
    from fido2.ctap2.extensions import PinComplexityPolicyExtension

    ctap2 = Ctap2(device)
    assert ctap2.get_info().pin_complexity_policy is False
    assert "pinComplexityPolicy" in ctap2.get_info().extensions
    client_pin = ClientPin(ctap2)
    client_pin.set_pin("1234")
    token = client_pin.get_pin_token("1234", ClientPin.PERMISSION.AUTHENTICATOR_CFG)
    Config(ctap2, client_pin.protocol, token).set_min_pin_length(rp_ids=["example.com"], pin_complexity_policy=True)
    info = Ctap2(device).get_info()
    assert info.pin_complexity_policy is True
    assert info.force_pin_change is True, "only the old PIN's hash is kept: it must change"
    for weak in ["123456", "999999", "passwords", "12345"]:
        with pytest.raises(CtapError) as error:
            client_pin.change_pin("1234", weak)
        assert error.value.code == CtapError.ERR.PIN_POLICY_VIOLATION, weak
    client_pin.change_pin("1234", "correct horse 9")
    assert Ctap2(device).get_info().force_pin_change is False

    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id="example.com"))
    user = PublicKeyCredentialUserEntity(id=b"alice", name="alice")
    options, state = server.register_begin(user, user_verification="required", extensions={"pinComplexityPolicy": True})
    client = Fido2Client(
        device, DefaultClientDataCollector("https://example.com"), PinInteraction("correct horse 9"), [PinComplexityPolicyExtension()]
    )
    response = client.make_credential(options.public_key)
    auth_data = server.register_complete(state, response)
    assert auth_data.extensions == {"pinComplexityPolicy": True}


def test_persistent_token_and_enc_identifier(tmp_path):
    """CTAP 2.2's persistentPinUvAuthToken: python-fido2 asks for PERSISTENT_CREDENTIAL_MGMT, reads
    credential management with it after the key restarts (no PIN asked again), cannot delete
    with it, and decrypts getInfo's encIdentifier with it (Info.get_identifier): the same
    identifier every time and across restarts, a new one after reset; and encCredStoreState
    (Info.get_cred_store_state): the same until a credential is made."""
    from fido2.ctap2.credman import CredentialManagement

    state = ["--state", str(tmp_path), "--presence", "auto"]
    key = RunningKey(*state)
    device = key.device()
    ctap2 = Ctap2(device)
    assert ctap2.get_info().options.get("perCredMgmtRO") is True
    assert ctap2.get_info().enc_identifier is None, "no PIN, no persistent token to read it with"
    client_pin = ClientPin(ctap2)
    client_pin.set_pin(PIN)
    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id="example.com"))
    options, _ = server.register_begin(PublicKeyCredentialUserEntity(id=b"alice", name="alice"), resident_key_requirement="required")
    Fido2Client(device, DefaultClientDataCollector("https://example.com"), PinInteraction(PIN)).make_credential(options.public_key)
    with pytest.raises(CtapError) as error:
        client_pin.get_pin_token(PIN, ClientPin.PERMISSION.PERSISTENT_CREDENTIAL_MGMT | ClientPin.PERMISSION.CREDENTIAL_MGMT)
    assert error.value.code == CtapError.ERR.UNAUTHORIZED_PERMISSION
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.PERSISTENT_CREDENTIAL_MGMT)
    identifier = ctap2.get_info().get_identifier(token)
    assert len(identifier) == 16
    assert ctap2.get_info().enc_identifier != ctap2.get_info().enc_identifier, "a fresh IV each time"
    assert ctap2.get_info().get_identifier(token) == identifier
    store_state = ctap2.get_info().get_cred_store_state(token)
    assert len(store_state) == 16 and ctap2.get_info().get_cred_store_state(token) == store_state
    device.close()
    key.stop()

    key = RunningKey(*state)
    device = key.device()
    ctap2 = Ctap2(device)
    credman = CredentialManagement(ctap2, ClientPin(ctap2).protocol, token)
    assert credman.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 1
    rps = credman.enumerate_rps()
    assert [rp[CredentialManagement.RESULT.RP]["id"] for rp in rps] == ["example.com"]
    creds = credman.enumerate_creds(rps[0][CredentialManagement.RESULT.RP_ID_HASH])
    with pytest.raises(CtapError) as error:
        credman.delete_cred(creds[0][CredentialManagement.RESULT.CREDENTIAL_ID])
    assert error.value.code == CtapError.ERR.PIN_AUTH_INVALID, "read-only"
    assert ctap2.get_info().get_identifier(token) == identifier, "the same key after a restart"
    assert ctap2.get_info().get_cred_store_state(token) == store_state, "nothing changed"
    options, _ = server.register_begin(PublicKeyCredentialUserEntity(id=b"bob", name="bob"), resident_key_requirement="required")
    Fido2Client(device, DefaultClientDataCollector("https://example.com"), PinInteraction(PIN)).make_credential(options.public_key)
    assert ctap2.get_info().get_cred_store_state(token) != store_state, "a new credential"
    ctap2.reset()
    client_pin = ClientPin(ctap2)
    client_pin.set_pin(PIN)
    renewed = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.PERSISTENT_CREDENTIAL_MGMT)
    assert renewed != token
    assert ctap2.get_info().get_identifier(renewed) != identifier, "reset: another identity"
    device.close()
    key.stop()

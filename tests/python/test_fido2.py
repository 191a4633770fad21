"""python-fido2 (pinned) as an independent client of the key, over USB/IP."""

from __future__ import annotations

import hashlib
import os

import pytest
from fido2.attestation import PackedAttestation
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.cose import ES256
from fido2.ctap import CtapError
from fido2.ctap1 import Ctap1
from fido2.ctap2 import Ctap2
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestedCredentialData,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
)

AWS_APP_ID = "https://u2f.aws.amazon.com/app-id.json"
USERS = ["root"] + [f"iam-user-{i}" for i in range(1, 9)]


def test_get_info(device):
    info = Ctap2(device).get_info()
    assert info.versions == ["U2F_V2", "FIDO_2_0", "FIDO_2_1", "FIDO_2_3"]
    assert "FIDO_2_2" not in info.versions, "CTAP 2.3 defines no FIDO_2_2"
    assert len(info.aaguid) == 16
    assert info.options["rk"] is True and info.options["up"] is True and info.options["plat"] is False
    assert info.max_msg_size == 7609
    assert info.max_cred_id_length <= 128
    assert [a["alg"] for a in info.algorithms] == [-7, -8]
    assert info.remaining_disc_creds > 0
    # CTAP 2.2's getInfo additions, as python-fido2 reads them.
    assert info.attestation_formats == ["packed", "none"]
    assert info.transports_for_reset == ["usb"]
    assert info.max_pin_length == 63
    assert info.authenticator_config_commands == [2, 3, 4, 0xFF]
    assert info.enc_identifier is None
    # longTouchForReset is offered (present) and off: python-fido2 reads an absent one as False.
    assert Ctap2(device).send_cbor(Ctap2.CMD.GET_INFO)[0x18] is False


def test_make_credential_and_get_assertion(device):
    ctap2 = Ctap2(device)
    client_data_hash = os.urandom(32)
    attestation = ctap2.make_credential(
        client_data_hash,
        {"id": "example.com", "name": "Example"},
        {"id": b"user-1", "name": "user"},
        [{"type": "public-key", "alg": -8}, {"type": "public-key", "alg": -7}],
    )
    assert attestation.fmt == "packed" and "x5c" not in attestation.att_stmt
    # Packed self attestation (no batch provisioned), verified by python-fido2's own verifier.
    result = PackedAttestation().verify(attestation.att_stmt, attestation.auth_data, client_data_hash)
    assert result.trust_path == []
    credential = attestation.auth_data.credential_data
    assert credential.public_key[3] == -8, "the client's first choice, EdDSA"
    challenge = os.urandom(32)
    assertion = ctap2.get_assertion("example.com", challenge, [{"type": "public-key", "id": credential.credential_id}])
    assertion.verify(challenge, credential.public_key)
    assert assertion.auth_data.counter > attestation.auth_data.counter


def test_ctap1_register_and_authenticate(device):
    ctap1 = Ctap1(device)
    assert ctap1.get_version() == "U2F_V2"
    app_param, client_param = hashlib.sha256(b"https://example.com").digest(), os.urandom(32)
    registration = ctap1.register(client_param, app_param)
    registration.verify(app_param, client_param)
    signature = ctap1.authenticate(client_param, app_param, registration.key_handle)
    signature.verify(app_param, client_param, registration.public_key)
    with pytest.raises(Exception):
        ctap1.authenticate(client_param, hashlib.sha256(b"other").digest(), registration.key_handle)


def _client(device, origin):
    return Fido2Client(device, DefaultClientDataCollector(origin), UserInteraction())


def test_nine_aws_users_on_one_key(device):
    rp = PublicKeyCredentialRpEntity(name="AWS", id="signin.aws.amazon.com")
    server = Fido2Server(rp)
    client = _client(device, "https://signin.aws.amazon.com")
    credentials = {}
    for name in USERS:
        user = PublicKeyCredentialUserEntity(id=name.encode(), name=name, display_name=name)
        options, state = server.register_begin(user, user_verification="discouraged", authenticator_attachment="cross-platform")
        response = client.make_credential(options.public_key)
        auth_data = server.register_complete(state, response)
        credentials[name] = auth_data.credential_data
    assert len({c.credential_id for c in credentials.values()}) == len(USERS)
    for name in USERS:
        # Each user signs in with its own credential; the server only accepts that one.
        own = [credentials[name]]
        options, state = server.authenticate_begin(own, user_verification="discouraged")
        result = client.get_assertion(options.public_key)
        response = result.get_response(0)
        server.authenticate_complete(state, own, response)
        others = [c for n, c in credentials.items() if n != name]
        options, state = server.authenticate_begin(own, user_verification="discouraged")
        response = client.get_assertion(options.public_key).get_response(0)
        with pytest.raises(Exception):
            server.authenticate_complete(state, others, response)


def test_nine_discoverable_users_listed_by_get_next_assertion(device):
    rp = PublicKeyCredentialRpEntity(name="AWS", id="aws.amazon.com")
    server = Fido2Server(rp)
    client = _client(device, "https://aws.amazon.com")
    credentials: dict[bytes, AttestedCredentialData] = {}
    for name in USERS:
        user = PublicKeyCredentialUserEntity(id=name.encode(), name=name, display_name=name)
        options, state = server.register_begin(user, resident_key_requirement="required", user_verification="discouraged")
        auth_data = server.register_complete(state, client.make_credential(options.public_key))
        credentials[name.encode()] = auth_data.credential_data
    options, state = server.authenticate_begin(user_verification="discouraged")
    result = client.get_assertion(options.public_key)
    assertions = result.get_assertions()
    assert len(assertions) == len(USERS)
    users = [a.user["id"] for a in assertions]
    assert sorted(users) == sorted(credentials)
    assert users[0] == USERS[-1].encode(), "the newest credential first"
    for index, assertion in enumerate(assertions):
        response = result.get_response(index)
        server.authenticate_complete(state, [credentials[assertion.user["id"]]], response)


def test_aws_u2f_app_id_flow(device):
    """A U2F registration under AWS's appId signs in through CTAP2, as browsers' appid
    extension does it: the appId is sent as the RP ID."""
    app_param = hashlib.sha256(AWS_APP_ID.encode()).digest()
    registration = Ctap1(device).register(os.urandom(32), app_param)
    ctap2 = Ctap2(device)
    challenge = os.urandom(32)
    allow = [{"type": "public-key", "id": registration.key_handle}]
    with pytest.raises(CtapError) as error:
        ctap2.get_assertion("aws.amazon.com", challenge, allow)
    assert error.value.code == CtapError.ERR.NO_CREDENTIALS
    assertion = ctap2.get_assertion(AWS_APP_ID, challenge, allow)
    assert assertion.auth_data.rp_id_hash == app_param
    assertion.verify(challenge, ES256.from_ctap1(registration.public_key))

"""Discoverable credentials and extensions with python-fido2, over USB/IP: credential
management, large blobs, PRF (hmac-secret), credBlob, credProtect."""

from __future__ import annotations

import hashlib

from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap2 import Ctap2
from fido2.ctap2.blob import LargeBlobs
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.extensions import (
    CredBlobExtension,
    CredProtectExtension,
    HmacSecretExtension,
    LargeBlobExtension,
)
from fido2.ctap2.pin import ClientPin
from fido2.server import Fido2Server
from fido2.utils import websafe_decode
from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity

PIN = "12345678"


class PinInteraction(UserInteraction):
    def request_pin(self, permissions, rp_id):
        return PIN


def _client(device, origin="https://example.com"):
    extensions = [HmacSecretExtension(allow_hmac_secret=True), LargeBlobExtension(), CredBlobExtension(), CredProtectExtension()]
    return Fido2Client(device, DefaultClientDataCollector(origin), PinInteraction(), extensions)


def _register(device, server, name, **kwargs):
    user = PublicKeyCredentialUserEntity(id=name.encode(), name=name, display_name=name.title())
    options, state = server.register_begin(user, resident_key_requirement="required", user_verification="required", **kwargs)
    response = _client(device).make_credential(options.public_key)
    return server.register_complete(state, response), response


def test_credential_management(device):
    ClientPin(Ctap2(device)).set_pin(PIN)
    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id="example.com"))
    ids = {name: _register(device, server, name)[0].credential_data.credential_id for name in ["alice", "bob", "carol"]}
    ctap2 = Ctap2(device)
    client_pin = ClientPin(ctap2)
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    credman = CredentialManagement(ctap2, client_pin.protocol, token)
    metadata = credman.get_metadata()
    assert metadata[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 3
    remaining = metadata[CredentialManagement.RESULT.MAX_REMAINING_COUNT]
    assert remaining > 1000
    rps = credman.enumerate_rps()
    assert [rp[CredentialManagement.RESULT.RP]["id"] for rp in rps] == ["example.com"]
    rp_id_hash = hashlib.sha256(b"example.com").digest()
    creds = credman.enumerate_creds(rp_id_hash)
    assert sorted(c[CredentialManagement.RESULT.USER]["name"] for c in creds) == ["alice", "bob", "carol"]
    descriptor = next(c[CredentialManagement.RESULT.CREDENTIAL_ID] for c in creds if c[CredentialManagement.RESULT.USER]["id"] == b"bob")
    assert descriptor["id"] == ids["bob"]
    credman.update_user_info(descriptor, {"id": b"bob", "name": "robert", "displayName": "Robert"})
    names = sorted(c[CredentialManagement.RESULT.USER]["name"] for c in credman.enumerate_creds(rp_id_hash))
    assert names == ["alice", "carol", "robert"]
    credman.delete_cred(descriptor)
    metadata = credman.get_metadata()
    assert metadata[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 2
    assert metadata[CredentialManagement.RESULT.MAX_REMAINING_COUNT] == remaining + 1, (
        f"deleting frees exactly one place: {remaining} -> {metadata[CredentialManagement.RESULT.MAX_REMAINING_COUNT]}"
    )
    info = Ctap2(device).get_info()
    assert info.remaining_disc_creds == remaining + 1


def test_prf_outputs_are_stable_per_credential(device):
    ClientPin(Ctap2(device)).set_pin(PIN)
    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id="example.com"))
    auth_data, response = _register(device, server, "alice", extensions={"prf": {}})
    assert response.client_extension_results["prf"]["enabled"] is True
    credential = auth_data.credential_data
    outputs = []
    for _ in range(2):
        options, state = server.authenticate_begin([credential], user_verification="required", extensions={"prf": {"eval": {"first": b"salt-one", "second": b"salt-two"}}})
        result = _client(device).get_assertion(options.public_key).get_response(0)
        server.authenticate_complete(state, [credential], result)
        prf = result.client_extension_results["prf"]["results"]
        outputs.append((websafe_decode(prf["first"]), websafe_decode(prf["second"])))
    assert outputs[0] == outputs[1], "same salts, same outputs"
    assert outputs[0][0] != outputs[0][1]
    assert len(outputs[0][0]) == 32


def test_cred_blob_and_cred_protect(device):
    ClientPin(Ctap2(device)).set_pin(PIN)
    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id="example.com"))
    blob = b"a small secret!"
    _, response = _register(device, server, "alice", extensions={"credBlob": blob, "credentialProtectionPolicy": "userVerificationRequired", "enforceCredentialProtectionPolicy": True})
    extensions = response.response.attestation_object.auth_data.extensions
    assert extensions["credBlob"] is True
    assert extensions["credProtect"] == 3
    ctap2 = Ctap2(device)
    # Without UV, a level-3 credential does not exist.
    assertions = []
    try:
        assertions = ctap2.get_assertions("example.com", b"\0" * 32)
    except Exception:
        pass
    assert assertions == []
    options, state = server.authenticate_begin(user_verification="required", extensions={"getCredBlob": True})
    result = _client(device).get_assertion(options.public_key).get_response(0)
    assert result.response.authenticator_data.extensions["credBlob"] == blob


def test_large_blobs(device):
    ClientPin(Ctap2(device)).set_pin(PIN)
    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id="example.com"))
    auth_data, response = _register(device, server, "alice", extensions={"largeBlob": {"support": "required"}})
    assert response.client_extension_results["largeBlob"]["supported"] is True
    data = bytes(range(256)) * 20  # 5 KiB
    options, state = server.authenticate_begin([auth_data.credential_data], user_verification="required", extensions={"largeBlob": {"write": data}})
    result = _client(device).get_assertion(options.public_key).get_response(0)
    assert result.client_extension_results["largeBlob"]["written"] is True
    options, state = server.authenticate_begin([auth_data.credential_data], user_verification="required", extensions={"largeBlob": {"read": True}})
    result = _client(device).get_assertion(options.public_key).get_response(0)
    assert websafe_decode(result.client_extension_results["largeBlob"]["blob"]) == data
    ctap2 = Ctap2(device)
    client_pin = ClientPin(ctap2)
    blobs = LargeBlobs(ctap2, client_pin.protocol, client_pin.get_pin_token(PIN, ClientPin.PERMISSION.LARGE_BLOB_WRITE))
    assert len(blobs.read_blob_array()) == 1


def test_prf_at_registration_uses_hmac_secret_mc(device):
    ClientPin(Ctap2(device)).set_pin(PIN)
    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id="example.com"))
    auth_data, response = _register(device, server, "alice", extensions={"prf": {"eval": {"first": b"registration salt"}}})
    at_create = response.client_extension_results["prf"]
    assert at_create["enabled"] is True
    first = websafe_decode(at_create["results"]["first"])
    assert len(first) == 32
    credential = auth_data.credential_data
    options, state = server.authenticate_begin([credential], user_verification="required", extensions={"prf": {"eval": {"first": b"registration salt"}}})
    result = _client(device).get_assertion(options.public_key).get_response(0)
    assert websafe_decode(result.client_extension_results["prf"]["results"]["first"]) == first, "same PRF at registration and sign-in"


def test_third_party_payment(device):
    """CTAP 2.2's thirdPartyPayment through python-fido2's ThirdPartyPaymentExtension (WebAuthn's
    payment input): set at registration, reported at sign-in and by credential management."""
    from fido2.ctap2.extensions import ThirdPartyPaymentExtension

    ClientPin(Ctap2(device)).set_pin(PIN)
    assert "thirdPartyPayment" in Ctap2(device).get_info().extensions
    server = Fido2Server(PublicKeyCredentialRpEntity(name="Bank", id="example.com"))
    client = Fido2Client(device, DefaultClientDataCollector("https://example.com"), PinInteraction(), [ThirdPartyPaymentExtension()])
    payment = {"payment": {"isPayment": True}}
    credentials = {}
    for name, extensions in [("payer", payment), ("saver", {})]:
        user = PublicKeyCredentialUserEntity(id=name.encode(), name=name)
        options, state = server.register_begin(user, resident_key_requirement="required", user_verification="required", extensions=extensions)
        auth_data = server.register_complete(state, client.make_credential(options.public_key))
        assert auth_data.extensions == ({"thirdPartyPayment": True} if extensions else None), name
        credentials[name] = auth_data.credential_data
    for name, expected in [("payer", True), ("saver", False)]:
        options, state = server.authenticate_begin([credentials[name]], user_verification="required", extensions=payment)
        response = client.get_assertion(options.public_key).get_response(0)
        server.authenticate_complete(state, [credentials[name]], response)
        assert response.response.authenticator_data.extensions == {"thirdPartyPayment": expected}, name
    ctap2 = Ctap2(device)
    client_pin = ClientPin(ctap2)
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    creds = CredentialManagement(ctap2, client_pin.protocol, token).enumerate_creds(hashlib.sha256(b"example.com").digest())
    flags = {c[CredentialManagement.RESULT.USER]["name"]: c[CredentialManagement.RESULT.THIRD_PARTY_PAYMENT] for c in creds}
    assert flags == {"payer": True, "saver": False}

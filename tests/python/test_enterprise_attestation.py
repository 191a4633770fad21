"""Enterprise attestation (CTAP 2.1 §7.1) with python-fido2: the `attestation` tool issues a
per-key certificate and installs it with its RP ID list; python-fido2's Config enables it and
Ctap2.make_credential(enterprise_attestation=...) asks for it; each packed statement is
verified up to our root, and its certificate must be the enterprise one exactly when epAtt is
true."""

from __future__ import annotations

import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from fido2.attestation import PackedAttestation, verify_x509_chain
from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, Ctap2
from fido2.ctap2.config import Config

from test_attestation import make_batch, tool

LISTED = "corp.example"
ES256 = [{"type": "public-key", "alg": -7}]


@pytest.fixture
def provisioned(tmp_path, key):
    """A key with the batch and an enterprise attestation for LISTED; (device, root DER,
    enterprise certificate DER, batch certificate DER)."""
    batch = make_batch(tmp_path, "ours")
    target = f"{key.host}:{key.port}:1-1"
    tool("provision", "--target", target, "--batch", str(batch))
    out = tmp_path / "key-0042"
    tool(
        "enterprise", "--ca", str(tmp_path / "ours-ca"), "--batch", str(batch),
        "--serial", "SN-0042", "--rp-id", LISTED, "--rp-id", "other.example",
        "--target", target, "--out", str(out),
    )
    der = lambda path: x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)
    device = key.device()
    try:
        yield device, der(batch / "ca.pem"), der(out / "enterprise.pem"), der(batch / "batch.pem")
    finally:
        device.close()


def register(ctap: Ctap2, rp_id: str, enterprise: int | None, root: bytes):
    """makeCredential; verifies the packed statement up to `root` and returns
    (certificate DER, epAtt)."""
    client_data_hash = os.urandom(32)
    response = ctap.make_credential(
        client_data_hash,
        {"id": rp_id, "name": rp_id},
        {"id": os.urandom(8), "name": "employee"},
        ES256,
        enterprise_attestation=enterprise,
    )
    assert response.fmt == "packed"
    result = PackedAttestation().verify(response.att_stmt, response.auth_data, client_data_hash)
    verify_x509_chain(result.trust_path + [root])
    return response.att_stmt["x5c"][0], response.ep_att


def test_enterprise_attestation_with_python_fido2(provisioned):
    device, root, enterprise, batch = provisioned
    ctap = Ctap2(device)
    assert ctap.get_info().options.get("ep") is False
    with pytest.raises(CtapError) as error:
        register(ctap, LISTED, 1, root)
    assert error.value.code == CtapError.ERR.INVALID_PARAMETER

    Config(ctap).enable_enterprise_attestation()
    assert ctap.get_info().options.get("ep") is True

    # The enterprise certificate names this key.
    serial = x509.load_der_x509_certificate(enterprise).subject
    assert serial.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "SN-0042"

    assert register(ctap, LISTED, 1, root) == (enterprise, True)
    assert register(ctap, "unlisted.example", 1, root) == (batch, None)
    assert register(ctap, "Corp.Example", 1, root) == (batch, None)
    assert register(ctap, "unlisted.example", 2, root) == (enterprise, True)
    assert register(ctap, LISTED, None, root) == (batch, None)
    with pytest.raises(CtapError) as error:
        register(ctap, LISTED, 3, root)
    assert error.value.code == CtapError.ERR.INVALID_OPTION

    # authenticatorReset disables it again.
    ctap.reset()
    assert ctap.get_info().options.get("ep") is False


def test_with_a_pin_enabling_needs_an_acfg_token(provisioned):
    device, root, enterprise, _ = provisioned
    ctap = Ctap2(device)
    client_pin = ClientPin(ctap)
    client_pin.set_pin("4321")
    with pytest.raises(CtapError) as error:
        Config(ctap).enable_enterprise_attestation()
    assert error.value.code == CtapError.ERR.PUAT_REQUIRED
    token = client_pin.get_pin_token("4321", ClientPin.PERMISSION.AUTHENTICATOR_CFG)
    Config(ctap, client_pin.protocol, token).enable_enterprise_attestation()
    assert ctap.get_info().options.get("ep") is True


def test_a_key_without_enterprise_attestation(device):
    ctap = Ctap2(device)
    assert "ep" not in ctap.get_info().options
    # python-fido2 reads getInfo's authenticatorConfigCommands, which lacks 0x01 here...
    with pytest.raises(ValueError, match="not supported"):
        Config(ctap).enable_enterprise_attestation()
    # ...and the command itself, sent anyway, is an unsupported subcommand (CTAP 2.1 §6.11:
    # CTAP1_ERR_INVALID_PARAMETER).
    with pytest.raises(CtapError) as error:
        ctap.config(Config.CMD.ENABLE_ENTERPRISE_ATT)
    assert error.value.code == CtapError.ERR.INVALID_PARAMETER
    with pytest.raises(CtapError) as error:
        ctap.make_credential(
            os.urandom(32), {"id": LISTED}, {"id": b"u", "name": "u"}, ES256,
            enterprise_attestation=1,
        )
    assert error.value.code == CtapError.ERR.INVALID_PARAMETER

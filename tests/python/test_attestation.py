"""Be your own vendor, end to end: make a CA, a batch and a metadata statement with the
`attestation` tool, provision a running virtual key over USB/IP, register with it, and have
python-fido2 verify the attestation against the metadata statement (fido2.mds3)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fido2.attestation import PackedAttestation, UntrustedAttestation, verify_x509_chain
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap2 import Ctap2
from fido2.mds3 import MdsAttestationVerifier, MetadataBlobPayload
from fido2.server import Fido2Server
from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity

from conftest import ROOT

TOOL = Path(os.environ.get("ATTESTATION_TOOL", ROOT / "target" / "debug" / "attestation"))
AAGUID = "6f70656e-6669-646f-2d6b-65792d300001"


def tool(*args: str) -> str:
    if not TOOL.exists():
        raise RuntimeError(f"{TOOL} is missing: run `cargo build -p attestation`")
    done = subprocess.run([str(TOOL), *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"attestation {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def make_batch(tmp_path: Path, name: str) -> Path:
    ca, batch = tmp_path / f"{name}-ca", tmp_path / f"{name}-batch"
    tool("ca", "--out", str(ca), "--organization", f"{name} vendor", "--country", "SE")
    tool("batch", "--ca", str(ca), "--aaguid", AAGUID, "--out", str(batch))
    return batch


def blob_with(statement: dict) -> MetadataBlobPayload:
    """A metadata BLOB payload holding one statement, as a relying party would load it from
    the FIDO MDS (here from our own statement instead)."""
    return MetadataBlobPayload.from_dict(
        {
            "legalHeader": "test",
            "no": 1,
            "nextUpdate": "2099-01-01",
            "entries": [
                {
                    "aaguid": statement["aaguid"],
                    "metadataStatement": statement,
                    "statusReports": [{"status": "NOT_FIDO_CERTIFIED"}],
                    "timeOfLastStatusChange": "2026-11-29",
                }
            ],
        }
    )


def register(device, verifier) -> tuple:
    rp = PublicKeyCredentialRpEntity(name="Example", id="example.com")
    server = Fido2Server(rp, attestation="direct", verify_attestation=verifier)
    client = Fido2Client(device, DefaultClientDataCollector("https://example.com"), UserInteraction())
    user = PublicKeyCredentialUserEntity(id=os.urandom(16), name="alice")
    options, state = server.register_begin(user, user_verification="discouraged")
    response = client.make_credential(options.public_key)
    auth_data = server.register_complete(state, response)
    return response, auth_data


def test_provisioned_key_verifies_against_its_metadata(tmp_path, key):
    batch = make_batch(tmp_path, "ours")
    # As docs/attestation.md does it: the statement first (from a throwaway key running this core)...
    tool("metadata", "--batch", str(batch))
    statement = json.loads((batch / "metadata.json").read_text())
    # ...then the key; the statement read back from it is the same.
    target = f"{key.host}:{key.port}:1-1"
    tool("provision", "--target", target, "--batch", str(batch))
    tool("metadata", "--batch", str(batch), "--target", target, "--out", str(tmp_path / "live.json"))
    assert json.loads((tmp_path / "live.json").read_text()) == statement

    # The statement as MDS3 wants it, with the getInfo this key really returns.
    assert statement["aaguid"] == AAGUID
    assert statement["attestationTypes"] == ["basic_full"]
    assert statement["protocolFamily"] == "fido2"
    assert statement["authenticatorGetInfo"]["aaguid"] == AAGUID.replace("-", "")
    device = key.device()
    try:
        info = Ctap2(device).get_info()
        assert str(info.aaguid) == AAGUID
        assert statement["authenticatorGetInfo"]["versions"] == list(info.versions)
        assert statement["authenticatorGetInfo"]["extensions"] == list(info.extensions)

        verifier = MdsAttestationVerifier(blob_with(statement))
        response, auth_data = register(device, verifier)
        attestation_object = response.response.attestation_object
        assert attestation_object.fmt == "packed"
        assert str(auth_data.credential_data.aaguid) == AAGUID

        # The same by hand: packed attestation with x5c, the trust path up to our root.
        client_data_hash = response.response.client_data.hash
        result = PackedAttestation().verify(
            attestation_object.att_stmt, attestation_object.auth_data, client_data_hash
        )
        root = x509.load_pem_x509_certificate((batch / "ca.pem").read_bytes())
        root_der = root.public_bytes(Encoding.DER)
        verify_x509_chain(result.trust_path + [root_der])
        entry = verifier.find_entry(attestation_object, client_data_hash)
        assert entry is not None and str(entry.aaguid) == AAGUID

        # Metadata from another vendor's CA for the same AAGUID must not vouch for this key.
        other = make_batch(tmp_path, "theirs")
        foreign = dict(statement)
        foreign_root = x509.load_pem_x509_certificate((other / "ca.pem").read_bytes())
        foreign["attestationRootCertificates"] = [
            base64.b64encode(foreign_root.public_bytes(Encoding.DER)).decode()
        ]
        with pytest.raises(UntrustedAttestation):
            MdsAttestationVerifier(blob_with(foreign))(attestation_object, client_data_hash)
    finally:
        device.close()


def test_second_provisioning_is_refused_and_reset_keeps_the_attestation(tmp_path, key):
    batch = make_batch(tmp_path, "first")
    target = f"{key.host}:{key.port}:1-1"
    tool("provision", "--target", target, "--batch", str(batch))
    second = make_batch(tmp_path, "second")
    done = subprocess.run(
        [str(TOOL), "provision", "--target", target, "--batch", str(second)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "already" in done.stderr

    tool("metadata", "--batch", str(batch), "--target", target)
    statement = json.loads((batch / "metadata.json").read_text())
    device = key.device()
    try:
        Ctap2(device).reset()
        _, auth_data = register(device, MdsAttestationVerifier(blob_with(statement)))
        assert str(auth_data.credential_data.aaguid) == AAGUID
    finally:
        device.close()


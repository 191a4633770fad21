"""Faults armed on the control socket (`fault KIND`, CDP's setResponseOverrideBits and more),
seen by the relying party: python-fido2's Fido2Server refuses the bad signature, the cleared
UV flag (UV required) and the cleared UP flag, and the RP code below (what a real RP adds:
python-fido2 2.x leaves signature counters to its caller) reports the rewound counter and the
one stuck at 0, as WebAuthn §7.2 step 21 says. Each fault is one-shot: the next sign-in is
clean. The key verifies users with its sensor (`--uv builtin --uv-mode auto`), so a response
has a UV flag to clear."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from conftest import RunningKey
from fido2.attestation import Attestation, InvalidSignature
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestedCredentialData,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
)
from keyctl import control

RP = PublicKeyCredentialRpEntity(name="Example", id="example.com")


def verify_statement(attestation_object, client_data_hash) -> None:
    """A careful RP checks the attestation signature even when it trusts no CA for it."""
    statement = Attestation.for_type(attestation_object.fmt)()
    statement.verify(attestation_object.att_stmt, attestation_object.auth_data, client_data_hash)


@dataclass
class Site:
    """A relying party: Fido2Server for the ceremonies, and the signature counter check
    python-fido2 leaves to its caller (WebAuthn §7.2 step 21)."""

    server: Fido2Server = field(
        default_factory=lambda: Fido2Server(RP, attestation="direct", verify_attestation=verify_statement)
    )
    counters: dict[bytes, int] = field(default_factory=dict)
    clone_warnings: list[str] = field(default_factory=list)

    def register(self, fido: Fido2Client, name: str) -> AttestedCredentialData:
        user = PublicKeyCredentialUserEntity(id=name.encode(), name=name, display_name=name)
        options, state = self.server.register_begin(user, user_verification="required")
        auth_data = self.server.register_complete(state, fido.make_credential(options.public_key))
        self.counters[auth_data.credential_data.credential_id] = auth_data.counter
        return auth_data.credential_data

    def sign_in(self, fido: Fido2Client, credential: AttestedCredentialData) -> int:
        options, state = self.server.authenticate_begin([credential], user_verification="required")
        response = fido.get_assertion(options.public_key).get_response(0)
        self.server.authenticate_complete(state, [credential], response)
        counter = response.response.authenticator_data.counter
        stored = self.counters[credential.credential_id]
        if (counter or stored) and counter <= stored:
            # Less than or equal: the signal that the authenticator may be cloned.
            self.clone_warnings.append(f"counter {counter} after {stored}: possibly a cloned key")
        else:
            self.counters[credential.credential_id] = counter
        return counter


@pytest.fixture
def faulty(tmp_path):
    sock = tmp_path / "control.sock"
    key = RunningKey("--ephemeral", "--presence", "auto", "--uv", "builtin", "--uv-mode", "auto", "--control", str(sock))
    device = key.device()
    fido = Fido2Client(device, DefaultClientDataCollector("https://example.com"), UserInteraction())
    site = Site()
    credential = site.register(fido, "alice")
    yield site, fido, credential, sock
    device.close()
    key.stop()


def test_the_rp_refuses_a_bad_signature(faulty):
    site, fido, credential, sock = faulty
    assert control(sock, "fault bad-signature") == "ok armed"
    with pytest.raises(ValueError, match="Invalid signature"):
        site.sign_in(fido, credential)
    site.sign_in(fido, credential)  # one-shot: the next one verifies
    # On a registration, the attestation signature is the one spoiled.
    assert control(sock, "fault bad-signature") == "ok armed"
    with pytest.raises(InvalidSignature):
        site.register(fido, "bob")


def test_the_rp_refuses_a_cleared_uv_flag_when_it_requires_uv(faulty):
    site, fido, credential, sock = faulty
    assert control(sock, "fault clear-uv") == "ok armed"
    with pytest.raises(ValueError, match="user verified flag not set"):
        site.sign_in(fido, credential)
    site.sign_in(fido, credential)
    assert control(sock, "fault clear-uv") == "ok armed"
    with pytest.raises(ValueError, match="User Verified flag not set"):
        site.register(fido, "carol")


def test_the_rp_refuses_a_cleared_up_flag(faulty):
    site, fido, credential, sock = faulty
    assert control(sock, "fault clear-up") == "ok armed"
    with pytest.raises(ValueError, match="User Present flag not set"):
        site.sign_in(fido, credential)
    site.sign_in(fido, credential)


def test_the_rp_sees_the_rewound_counter(faulty):
    site, fido, credential, sock = faulty
    before = site.sign_in(fido, credential)
    assert control(sock, "fault counter-rewind") == "ok armed"
    assert site.sign_in(fido, credential) == 1, "Fido2Server itself accepts it"
    assert site.clone_warnings == [f"counter 1 after {before}: possibly a cloned key"]
    assert site.sign_in(fido, credential) > before, "the key's own counter went on"
    assert len(site.clone_warnings) == 1


def test_a_counter_stuck_at_zero(faulty):
    site, fido, credential, sock = faulty
    # After counters > 0, a 0 is a rewind too.
    assert control(sock, "fault counter-zero") == "ok armed"
    assert site.sign_in(fido, credential) == 0
    assert len(site.clone_warnings) == 1
    # A key that never counts (0 at registration and at every sign-in) is no clone.
    assert control(sock, "fault counter-zero") == "ok armed"
    zero = site.register(fido, "dave")
    assert site.counters[zero.credential_id] == 0
    assert control(sock, "fault counter-zero") == "ok armed"
    assert site.sign_in(fido, zero) == 0
    assert len(site.clone_warnings) == 1

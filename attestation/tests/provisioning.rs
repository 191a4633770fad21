//! The attestation tool against a running virtual key, over USB/IP: provisioning, packed
//! attestation with the batch certificate, the certificate's fields, what survives a reset, and
//! what an unprovisioned key does.

use attestation::certificate::{self, Issued, Subject, AAGUID_OID, ATTESTATION_OU};
use attestation::provision::{self, Target, PROVISION_ATTESTATION};
use ciborium::Value;
use der::{Decode, Encode};
use e2e_tests::ctap::*;
use e2e_tests::ctaphid::Channel;
use e2e_tests::Key;
use p256::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};
use usbip_runner::{PresenceMode, ServerConfig, StateLocation};
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

const MAKE_CREDENTIAL: u8 = 0x01;
const GET_INFO: u8 = 0x04;
const RESET: u8 = 0x07;
const ES256: i64 = -7;
const EDDSA: i64 = -8;
/// The model's AAGUID, which an unprovisioned key reports.
const MODEL_AAGUID: &str = "c56e6d6e-3d7e-4079-8197-760492289b2e";
const BATCH_AAGUID: &str = "6f70656e-6669-646f-2d62-617463680001";

fn subject(name: &str) -> Subject {
    Subject {
        country: "SE".into(),
        organization: "Attestation Test Vendor".into(),
        common_name: name.into(),
    }
}

fn ca_and_batch() -> (Issued, Issued) {
    let ca = certificate::root_ca(&subject("Test Root"), 30).unwrap();
    let aaguid = attestation::parse_aaguid(BATCH_AAGUID).unwrap();
    let batch = certificate::batch(&ca, &subject("Test Batch"), aaguid, 20).unwrap();
    (ca, batch)
}

fn target(key: &Key) -> Target {
    Target::UsbIp {
        addr: key.addr(),
        bus_id: "1-1".into(),
    }
}

fn aaguid_in_get_info(channel: &mut Channel) -> [u8; 16] {
    let (status, info) = call(channel, GET_INFO, None);
    assert_eq!(status, 0);
    get(&info.unwrap(), 3)
        .and_then(Value::as_bytes)
        .unwrap()
        .as_slice()
        .try_into()
        .unwrap()
}

/// makeCredential; returns (fmt, attStmt, authData).
fn register(
    channel: &mut Channel,
    alg: i64,
    extra: Vec<(Value, Value)>,
) -> (String, Value, AuthData) {
    let mut request = make_credential_request("attestation.example", b"user-1", &[alg], false);
    if let Value::Map(entries) = &mut request {
        entries.extend(extra);
    }
    let (status, response) = call(channel, MAKE_CREDENTIAL, Some(request));
    assert_eq!(status, 0, "makeCredential");
    let response = response.unwrap();
    let fmt = get(&response, 1).unwrap().as_text().unwrap().to_owned();
    let auth_data = parse_auth_data(get(&response, 2).unwrap().as_bytes().unwrap());
    let statement = get(&response, 3).unwrap().clone();
    (fmt, statement, auth_data)
}

fn aaguid_of_auth_data(auth_data: &AuthData) -> [u8; 16] {
    auth_data.raw[37..53].try_into().unwrap()
}

/// Check a packed statement made with the batch: x5c is the batch certificate, and the
/// signature over authData ‖ clientDataHash verifies with its key.
fn assert_batch_attestation(statement: &Value, auth_data: &AuthData, batch: &Issued) {
    assert_eq!(as_int(get_text(statement, "alg").unwrap()), ES256);
    let x5c = get_text(statement, "x5c").unwrap().as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    assert_eq!(
        x5c[0].as_bytes().unwrap(),
        &batch.certificate.to_der().unwrap()
    );
    let signature = get_text(statement, "sig").unwrap().as_bytes().unwrap();
    let signed = [&auth_data.raw[..], &[7u8; 32]].concat();
    batch
        .key
        .verifying_key()
        .verify(
            &signed,
            &p256::ecdsa::Signature::from_der(signature).unwrap(),
        )
        .expect("the attestation signature verifies with the batch key");
}

#[test]
fn a_provisioned_key_attests_with_the_batch_and_keeps_it_for_life() {
    let (ca, batch) = ca_and_batch();
    let key = Key::start(PresenceMode::Auto);
    let batch_aaguid = attestation::parse_aaguid(BATCH_AAGUID).unwrap();

    provision::provision(&target(&key), &batch).expect("the first provisioning is accepted");

    let mut channel = key.channel();
    assert_eq!(aaguid_in_get_info(&mut channel), batch_aaguid);
    for alg in [ES256, EDDSA] {
        let (fmt, statement, auth_data) = register(&mut channel, alg, vec![]);
        assert_eq!(fmt, "packed");
        assert_eq!(aaguid_of_auth_data(&auth_data), batch_aaguid);
        assert_batch_attestation(&statement, &auth_data, &batch);
    }

    // The trust path: the batch certificate is signed by the root.
    let tbs = batch.certificate.tbs_certificate().to_der().unwrap();
    let signature =
        p256::ecdsa::DerSignature::from_bytes(batch.certificate.signature().raw_bytes()).unwrap();
    ca.key
        .verifying_key()
        .verify(&tbs, &signature)
        .expect("the root signed the batch certificate");

    // A second provisioning is refused, whatever it brings.
    drop(channel);
    let (_, other) = ca_and_batch();
    let error = provision::provision(&target(&key), &other).unwrap_err();
    assert!(error.to_string().contains("already"), "{error}");

    // authenticatorReset forgets credentials, not the attestation.
    let mut channel = key.channel();
    assert_eq!(call(&mut channel, RESET, None).0, 0);
    assert_eq!(aaguid_in_get_info(&mut channel), batch_aaguid);
    let (fmt, statement, auth_data) = register(&mut channel, ES256, vec![]);
    assert_eq!(fmt, "packed");
    assert_batch_attestation(&statement, &auth_data, &batch);

    // The platform can still ask for no attestation (attestationFormatsPreference).
    let none = vec![(int(0x0B), Value::Array(vec![text("none"), text("packed")]))];
    let (fmt, statement, _) = register(&mut channel, ES256, none);
    assert_eq!(fmt, "none");
    assert_eq!(statement, Value::Map(vec![]));
}

#[test]
fn the_batch_certificate_meets_the_packed_attestation_requirements() {
    let (ca, batch) = ca_and_batch();
    let der = batch.certificate.to_der().unwrap();
    let certificate = Certificate::from_der(&der).unwrap();
    let tbs = certificate.tbs_certificate();
    assert_eq!(tbs.version(), x509_cert::certificate::Version::V3);
    let subject = tbs.subject().to_string();
    for part in ["C=SE", "O=Attestation Test Vendor", "CN=Test Batch"] {
        assert!(subject.contains(part), "{subject} lacks {part}");
    }
    assert!(
        subject.contains(&format!("OU={ATTESTATION_OU}")),
        "{subject}"
    );
    assert_eq!(tbs.issuer(), ca.certificate.tbs_certificate().subject());
    let (critical, constraints) = tbs.get_extension::<BasicConstraints>().unwrap().unwrap();
    assert!(!constraints.ca);
    assert!(critical, "basic constraints are critical");
    let aaguid = tbs
        .extensions()
        .unwrap()
        .iter()
        .find(|e| e.extn_id == AAGUID_OID)
        .expect("the AAGUID extension");
    assert!(
        !aaguid.critical,
        "the AAGUID extension must not be critical"
    );
    assert_eq!(
        certificate::aaguid_of(&certificate),
        Some(attestation::parse_aaguid(BATCH_AAGUID).unwrap())
    );

    // Its AAGUID is the one a key provisioned with it reports in getInfo.
    let key = Key::start(PresenceMode::Auto);
    provision::provision(&target(&key), &batch).unwrap();
    assert_eq!(
        Some(aaguid_in_get_info(&mut key.channel())),
        certificate::aaguid_of(&certificate)
    );

    let root = ca.certificate.tbs_certificate();
    let (_, constraints) = root.get_extension::<BasicConstraints>().unwrap().unwrap();
    assert!(constraints.ca);
    assert_eq!(root.issuer(), root.subject());
}

#[test]
fn an_unprovisioned_key_attests_itself_and_refuses_bad_batches() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    let model = attestation::parse_aaguid(MODEL_AAGUID).unwrap();
    assert_eq!(aaguid_in_get_info(&mut channel), model);

    // Self attestation: no certificate, signed by the credential's own key.
    for alg in [ES256, EDDSA] {
        let (fmt, statement, auth_data) = register(&mut channel, alg, vec![]);
        assert_eq!(fmt, "packed");
        assert_eq!(aaguid_of_auth_data(&auth_data), model);
        assert!(get_text(&statement, "x5c").is_none());
        assert_eq!(as_int(get_text(&statement, "alg").unwrap()), alg);
        let signature = get_text(&statement, "sig").unwrap().as_bytes().unwrap();
        let signed = [&auth_data.raw[..], &[7u8; 32]].concat();
        verify(auth_data.public_key.as_ref().unwrap(), &signed, signature);
    }

    // Batches the key must refuse: a certificate for another key, no AAGUID, garbage.
    let (_, batch) = ca_and_batch();
    let (_, other) = ca_and_batch();
    let key_bytes = batch.key.to_bytes().to_vec();
    let cert_of_other = other.certificate.to_der().unwrap();
    let mismatched = map(vec![
        (int(1), bytes(&key_bytes)),
        (int(2), bytes(&cert_of_other)),
    ]);
    let no_aaguid = map(vec![
        (int(1), bytes(&key_bytes)),
        (int(2), bytes(&[0x30, 0x03, 0x02, 0x01, 0x01])),
    ]);
    let short_key = map(vec![
        (int(1), bytes(&key_bytes[..31])),
        (int(2), bytes(&batch.certificate.to_der().unwrap())),
    ]);
    for (request, status) in [
        (cbor(&mismatched), 0x02),
        (cbor(&no_aaguid), 0x02),
        (cbor(&short_key), 0x02),
        (vec![0xA2, 0x01], 0x12),
        (vec![], 0x12),
    ] {
        let (command, response) = channel.transact(PROVISION_ATTESTATION, &request).unwrap();
        assert_eq!(
            (command, response.as_slice()),
            (PROVISION_ATTESTATION, &[status][..])
        );
    }
    // Still unprovisioned, and U2F registration is self-signed.
    assert_eq!(aaguid_in_get_info(&mut channel), model);
    drop(channel);
    provision::provision(&target(&key), &batch).expect("a good batch is still accepted");
}

#[test]
fn u2f_registrations_carry_the_batch_certificate() {
    let (_, batch) = ca_and_batch();
    let key = Key::start(PresenceMode::Auto);
    provision::provision(&target(&key), &batch).unwrap();
    let mut channel = key.channel();
    let challenge = [0x42u8; 32];
    let app: [u8; 32] = Sha256::digest(b"https://u2f.example").into();
    let data = [&challenge[..], &app].concat();
    let mut apdu = vec![0, 0x01, 0, 0, 0, 0, data.len() as u8];
    apdu.extend_from_slice(&data);
    apdu.extend_from_slice(&[0, 0]);
    let (response, sw) = channel.msg(&apdu).unwrap();
    assert_eq!(sw, 0x9000);
    let handle_len = usize::from(response[66]);
    let key_handle = &response[67..67 + handle_len];
    let rest = &response[67 + handle_len..];
    let certificate = batch.certificate.to_der().unwrap();
    assert_eq!(&rest[..certificate.len()], certificate.as_slice());
    let signature = p256::ecdsa::Signature::from_der(&rest[certificate.len()..]).unwrap();
    let signed = [&[0u8][..], &app, &challenge, key_handle, &response[1..66]].concat();
    batch
        .key
        .verifying_key()
        .verify(&signed, &signature)
        .expect("the registration is signed by the batch key");
}

#[test]
fn the_runner_installs_a_batch_from_its_attestation_option() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, batch) = ca_and_batch();
    attestation::files::save(dir.path(), &ca, "ca.key.pem", "ca.pem").unwrap();
    attestation::files::save(dir.path(), &batch, "batch.key.pem", "batch.pem").unwrap();
    let loaded = usbip_runner::attestation::load(dir.path()).expect("the batch loads");

    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        PresenceMode::Auto,
        StateLocation::Ephemeral,
    );
    config.attestation = Some(loaded);
    let key = Key::start_config(config);
    let mut channel = key.channel();
    let (fmt, statement, auth_data) = register(&mut channel, ES256, vec![]);
    assert_eq!(fmt, "packed");
    assert_batch_attestation(&statement, &auth_data, &batch);
    // Installed as if provisioned: the vendor command now refuses.
    drop(channel);
    assert!(provision::provision(&target(&key), &batch).is_err());

    // A directory without a batch is an error, not a silent self attestation.
    let empty = tempfile::tempdir().unwrap();
    assert!(usbip_runner::attestation::load(empty.path()).is_err());
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

//! U2F (CTAP1) messages against the core, and U2F key handles through CTAP2.

use authenticator::ctaphid::{App, Transaction};
use authenticator::platform::PresenceAnswer;
use p256::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};
use test_support::*;

const AWS_APP_ID: &str = "https://u2f.aws.amazon.com/app-id.json";

fn msg(key: &mut impl App, apdu: &[u8]) -> (Vec<u8>, u16) {
    let mut response = Vec::new();
    key.call(Transaction::Msg, apdu, &mut response);
    let sw = u16::from_be_bytes([response[response.len() - 2], response[response.len() - 1]]);
    response.truncate(response.len() - 2);
    (response, sw)
}

/// An extended-length APDU, as python-fido2 and libfido2 send it.
fn apdu(ins: u8, p1: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, ins, p1, 0, 0, (data.len() >> 8) as u8, data.len() as u8];
    out.extend_from_slice(data);
    out.extend_from_slice(&[0, 0]);
    out
}

struct Registration {
    key_handle: Vec<u8>,
    public_key: p256::ecdsa::VerifyingKey,
}

fn register(key: &mut impl App, app: &[u8; 32], challenge: &[u8; 32]) -> Registration {
    let (data, sw) = msg(key, &apdu(0x01, 0, &[&challenge[..], &app[..]].concat()));
    assert_eq!(sw, 0x9000);
    assert_eq!(data[0], 0x05);
    let public_key_bytes = &data[1..66];
    let public_key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key_bytes).unwrap();
    let kh_len = data[66] as usize;
    let key_handle = data[67..67 + kh_len].to_vec();
    let rest = &data[67 + kh_len..];
    // The certificate is one DER SEQUENCE with a two-byte length; the signature follows it.
    assert_eq!(rest[0], 0x30);
    let cert_len = match rest[1] {
        0x81 => 3 + rest[2] as usize,
        0x82 => 4 + u16::from_be_bytes([rest[2], rest[3]]) as usize,
        n => 2 + n as usize,
    };
    let signature = p256::ecdsa::Signature::from_der(&rest[cert_len..]).unwrap();
    let signed = [&[0u8][..], app, challenge, &key_handle, public_key_bytes].concat();
    // Self attestation: the certificate holds the credential key, which signed the registration.
    public_key
        .verify(&signed, &signature)
        .expect("registration signature verifies");
    Registration {
        key_handle,
        public_key,
    }
}

fn authenticate(
    key: &mut impl App,
    control: u8,
    app: &[u8; 32],
    challenge: &[u8; 32],
    kh: &[u8],
) -> (Vec<u8>, u16) {
    let data = [&challenge[..], &app[..], &[kh.len() as u8], kh].concat();
    msg(key, &apdu(0x02, control, &data))
}

fn check_authentication(
    reg: &Registration,
    app: &[u8; 32],
    challenge: &[u8; 32],
    data: &[u8],
) -> u32 {
    let signed = [&app[..], &data[..5], challenge].concat();
    let signature = p256::ecdsa::Signature::from_der(&data[5..]).unwrap();
    reg.public_key
        .verify(&signed, &signature)
        .expect("authentication signature verifies");
    u32::from_be_bytes(data[1..5].try_into().unwrap())
}

#[test]
fn version_register_and_authenticate() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 1, |key| {
        assert_eq!(msg(key, &[0, 3, 0, 0]), (b"U2F_V2".to_vec(), 0x9000));
        assert_eq!(
            msg(key, &[0, 3, 0, 0, 0, 0, 0]),
            (b"U2F_V2".to_vec(), 0x9000)
        );
        let app = [1u8; 32];
        let reg = register(key, &app, &[2u8; 32]);
        assert!(reg.key_handle.len() <= 128);

        let (_, sw) = authenticate(key, 0x07, &app, &[3; 32], &reg.key_handle);
        assert_eq!(sw, 0x6985, "check-only: the handle is ours");
        let (_, sw) = authenticate(key, 0x07, &[9; 32], &[3; 32], &reg.key_handle);
        assert_eq!(sw, 0x6A80, "check-only: not ours for another app");

        let (data, sw) = authenticate(key, 0x03, &app, &[3; 32], &reg.key_handle);
        assert_eq!(sw, 0x9000);
        assert_eq!(data[0], 1, "user present");
        let c1 = check_authentication(&reg, &app, &[3; 32], &data);

        knobs.presence.set(PresenceAnswer::Denied);
        let (_, sw) = authenticate(key, 0x03, &app, &[4; 32], &reg.key_handle);
        assert_eq!(sw, 0x6985, "enforce presence without a touch");
        let (data, sw) = authenticate(key, 0x08, &app, &[4; 32], &reg.key_handle);
        assert_eq!(sw, 0x9000, "don't-enforce needs no touch");
        assert_eq!(data[0], 0);
        let c2 = check_authentication(&reg, &app, &[4; 32], &data);
        assert!(c2 > c1);
        let (_, sw) = msg(key, &apdu(0x01, 0, &[0u8; 64]));
        assert_eq!(sw, 0x6985, "register without a touch");
    });
}

#[test]
fn bad_apdus_get_status_words() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 2, |key| {
        assert_eq!(msg(key, &[0x80, 3, 0, 0]).1, 0x6E00, "CLA");
        assert_eq!(msg(key, &[0, 0x55, 0, 0]).1, 0x6D00, "INS");
        assert_eq!(
            msg(key, &apdu(0x01, 0, &[0u8; 63])).1,
            0x6700,
            "register length"
        );
        assert_eq!(msg(key, &[0, 1, 0]).1, 0x6700, "short header");
        assert_eq!(
            msg(key, &[0, 1, 0, 0, 0, 0, 64, 1, 2]).1,
            0x6700,
            "Lc larger than data"
        );
        assert_eq!(
            msg(key, &apdu(0x02, 0x03, &[0u8; 64])).1,
            0x6700,
            "authenticate without handle length"
        );
        assert_eq!(
            msg(key, &apdu(0x02, 0x03, &[0u8; 70])).1,
            0x6700,
            "handle length mismatch"
        );
        let mut bogus = vec![0u8; 64];
        bogus.push(75);
        bogus.extend_from_slice(&[0u8; 75]);
        assert_eq!(
            msg(key, &apdu(0x02, 0x03, &bogus)).1,
            0x6A80,
            "not our handle"
        );
        assert_eq!(
            msg(key, &apdu(0x03, 0, b"x")).1,
            0x6700,
            "VERSION with data"
        );
        let reg = register(key, &[1; 32], &[2; 32]);
        assert_eq!(
            authenticate(key, 0x05, &[1; 32], &[0; 32], &reg.key_handle).1,
            0x6A86,
            "unknown control byte"
        );
    });
}

#[test]
fn aws_u2f_registration_works_through_ctap2_with_the_app_id() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 3, |key| {
        let app: [u8; 32] = Sha256::digest(AWS_APP_ID.as_bytes()).into();
        let reg = register(key, &app, &[5; 32]);
        let cdh = [6u8; 32];
        let (status, _) = ctap2(
            key,
            0x02,
            Some(get_assertion_request(
                "aws.amazon.com",
                &cdh,
                &[&reg.key_handle],
            )),
        );
        assert_eq!(status, 0x2E, "the rpId alone does not open a U2F handle");
        let (status, body) = ctap2(
            key,
            0x02,
            Some(get_assertion_request(AWS_APP_ID, &cdh, &[&reg.key_handle])),
        );
        assert_eq!(status, 0);
        let body = body.unwrap();
        let raw = get(&body, 2).unwrap().as_bytes().unwrap();
        assert_eq!(&raw[..32], &app);
        let signed = [&raw[..], &cdh].concat();
        let sig =
            p256::ecdsa::Signature::from_der(get(&body, 3).unwrap().as_bytes().unwrap()).unwrap();
        reg.public_key
            .verify(&signed, &sig)
            .expect("CTAP2 assertion with the U2F key verifies");
    });
}

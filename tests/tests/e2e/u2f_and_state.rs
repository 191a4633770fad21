//! U2F over USB/IP, the AWS legacy appId flow, and state across restarts and crashes.

use ciborium::Value;
use e2e_tests::ctap::*;
use e2e_tests::ctaphid::Channel;
use e2e_tests::Key;
use p256::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};
use usbip_runner::PresenceMode;

const AWS_APP_ID: &str = "https://u2f.aws.amazon.com/app-id.json";

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

fn register(channel: &mut Channel, app: &[u8; 32]) -> Registration {
    let challenge = [0x42u8; 32];
    let (data, sw) = channel
        .msg(&apdu(0x01, 0, &[&challenge[..], app].concat()))
        .unwrap();
    assert_eq!(sw, 0x9000);
    assert_eq!(data[0], 0x05);
    let public_key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&data[1..66]).unwrap();
    let kh_len = usize::from(data[66]);
    let key_handle = data[67..67 + kh_len].to_vec();
    let rest = &data[67 + kh_len..];
    let cert_len = match rest[1] {
        0x82 => 4 + usize::from(u16::from_be_bytes([rest[2], rest[3]])),
        0x81 => 3 + usize::from(rest[2]),
        n => 2 + usize::from(n),
    };
    let signature = p256::ecdsa::Signature::from_der(&rest[cert_len..]).unwrap();
    let signed = [&[0u8][..], app, &challenge, &key_handle, &data[1..66]].concat();
    public_key
        .verify(&signed, &signature)
        .expect("registration signature");
    Registration {
        key_handle,
        public_key,
    }
}

fn authenticate(
    channel: &mut Channel,
    control: u8,
    app: &[u8; 32],
    registration: &Registration,
) -> (u16, Option<u32>) {
    let challenge = [0x17u8; 32];
    let data = [
        &challenge[..],
        app,
        &[registration.key_handle.len() as u8],
        &registration.key_handle,
    ]
    .concat();
    let (response, sw) = channel.msg(&apdu(0x02, control, &data)).unwrap();
    if sw != 0x9000 {
        return (sw, None);
    }
    let signed = [&app[..], &response[..5], &challenge].concat();
    let signature = p256::ecdsa::Signature::from_der(&response[5..]).unwrap();
    registration
        .public_key
        .verify(&signed, &signature)
        .expect("authentication signature");
    (
        sw,
        Some(u32::from_be_bytes(response[1..5].try_into().unwrap())),
    )
}

#[test]
fn u2f_version_register_authenticate_and_errors() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    assert_eq!(
        channel.msg(&[0, 3, 0, 0, 0, 0, 0]).unwrap(),
        (b"U2F_V2".to_vec(), 0x9000)
    );
    let app = [5u8; 32];
    let registration = register(&mut channel, &app);
    assert!(registration.key_handle.len() <= 128);
    assert_eq!(
        authenticate(&mut channel, 0x07, &app, &registration).0,
        0x6985,
        "check-only: ours"
    );
    assert_eq!(
        authenticate(&mut channel, 0x07, &[6; 32], &registration).0,
        0x6A80,
        "check-only: not for this app"
    );
    let (sw, c1) = authenticate(&mut channel, 0x03, &app, &registration);
    assert_eq!(sw, 0x9000);
    let (sw, c2) = authenticate(&mut channel, 0x08, &app, &registration);
    assert_eq!(sw, 0x9000);
    assert!(c2 > c1);
    assert_eq!(channel.msg(&[0x80, 3, 0, 0]).unwrap().1, 0x6E00, "bad CLA");
    assert_eq!(channel.msg(&[0, 0x44, 0, 0]).unwrap().1, 0x6D00, "bad INS");
    assert_eq!(
        channel.msg(&apdu(0x01, 0, &[0; 10])).unwrap().1,
        0x6700,
        "bad length"
    );
}

#[test]
fn aws_u2f_registration_signs_through_ctap2_with_the_app_id() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    let app: [u8; 32] = Sha256::digest(AWS_APP_ID.as_bytes()).into();
    let registration = register(&mut channel, &app);
    let cdh = [8u8; 32];
    let (status, _) = channel
        .cbor(&request(
            0x02,
            Some(&get_assertion_request(
                "aws.amazon.com",
                &cdh,
                &[&registration.key_handle],
            )),
        ))
        .unwrap();
    assert_eq!(status, 0x2E, "not under the WebAuthn RP ID");
    let (status, body) = channel
        .cbor(&request(
            0x02,
            Some(&get_assertion_request(
                AWS_APP_ID,
                &cdh,
                &[&registration.key_handle],
            )),
        ))
        .unwrap();
    assert_eq!(status, 0, "the appid extension's rpId works");
    let body = decode_body(&body).unwrap();
    let raw = get(&body, 2).unwrap().as_bytes().unwrap();
    assert_eq!(&raw[..32], &app, "rpIdHash = SHA-256(appId)");
    let signature =
        p256::ecdsa::Signature::from_der(get(&body, 3).unwrap().as_bytes().unwrap()).unwrap();
    registration
        .public_key
        .verify(&[&raw[..], &cdh].concat(), &signature)
        .unwrap();
}

fn assert_counter(key: &Key, id: &[u8], public_key: &Value) -> u32 {
    let mut channel = key.channel();
    let cdh = [3u8; 32];
    let (status, body) = channel
        .cbor(&request(
            0x02,
            Some(&get_assertion_request("example.com", &cdh, &[id])),
        ))
        .unwrap();
    assert_eq!(status, 0);
    let body = decode_body(&body).unwrap();
    let raw = get(&body, 2).unwrap().as_bytes().unwrap();
    verify(
        public_key,
        &[&raw[..], &cdh].concat(),
        get(&body, 3).unwrap().as_bytes().unwrap(),
    );
    parse_auth_data(raw).counter
}

#[test]
fn state_survives_restarts_and_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let args = ["--presence", "auto", "--state", state];
    let key = Key::spawn(&args);
    let mut channel = key.channel();
    let (status, body) = channel
        .cbor(&request(
            0x01,
            Some(&make_credential_request("example.com", b"u", &[-7], true)),
        ))
        .unwrap();
    assert_eq!(status, 0);
    let auth_data = parse_auth_data(
        get(&decode_body(&body).unwrap(), 2)
            .unwrap()
            .as_bytes()
            .unwrap(),
    );
    let (id, public_key) = (auth_data.credential_id, auth_data.public_key.unwrap());
    drop(channel);
    let mut last = assert_counter(&key, &id, &public_key);
    assert!(key.terminate(), "SIGTERM shuts down cleanly");

    let key = Key::spawn(&args);
    let counter = assert_counter(&key, &id, &public_key);
    assert!(counter > last, "higher after a restart: {counter} > {last}");
    last = counter;
    // The discoverable credential is still listed.
    let mut channel = key.channel();
    let (status, _) = channel
        .cbor(&request(
            0x02,
            Some(&get_assertion_request("example.com", &[0; 32], &[])),
        ))
        .unwrap();
    assert_eq!(status, 0);
    drop(channel);
    key.kill();

    for _ in 0..3 {
        let key = Key::spawn(&args);
        let counter = assert_counter(&key, &id, &public_key);
        assert!(counter > last, "higher after SIGKILL: {counter} > {last}");
        last = counter;
        key.kill();
    }
}

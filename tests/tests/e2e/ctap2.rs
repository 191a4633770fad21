//! CTAP2 over USB/IP: every command of the foundation issue, each signature verified against
//! the public key the key returned.

use std::time::{Duration, Instant};

use ciborium::Value;
use e2e_tests::ctap::*;
use e2e_tests::ctaphid::{self, Channel};
use e2e_tests::Key;
use sha2::{Digest, Sha256};
use usbip_runner::PresenceMode;

const MAKE_CREDENTIAL: u8 = 0x01;
const GET_ASSERTION: u8 = 0x02;
const GET_INFO: u8 = 0x04;
const RESET: u8 = 0x07;
const GET_NEXT_ASSERTION: u8 = 0x08;
const SELECTION: u8 = 0x0B;

fn call(channel: &mut Channel, command: u8, body: Option<Value>) -> (u8, Option<Value>) {
    let (status, body) = channel
        .cbor(&request(command, body.as_ref()))
        .expect("a CTAPHID answer");
    (status, decode_body(&body))
}

/// makeCredential, checked: packed self attestation verified with the new credential's key.
fn register(
    channel: &mut Channel,
    rp: &str,
    user: &[u8],
    algs: &[i64],
    rk: bool,
) -> (Vec<u8>, Value, u32) {
    let (status, body) = call(
        channel,
        MAKE_CREDENTIAL,
        Some(make_credential_request(rp, user, algs, rk)),
    );
    assert_eq!(status, 0, "makeCredential");
    let body = body.unwrap();
    assert_eq!(get(&body, 1), Some(&text("packed")));
    let raw = get(&body, 2).unwrap().as_bytes().unwrap().clone();
    let auth_data = parse_auth_data(&raw);
    assert_eq!(
        auth_data.rp_id_hash,
        <[u8; 32]>::from(Sha256::digest(rp.as_bytes()))
    );
    assert_eq!(auth_data.flags & 0x41, 0x41);
    let public_key = auth_data.public_key.clone().unwrap();
    let statement = get(&body, 3).unwrap();
    assert_eq!(
        get_text(statement, "alg"),
        get(&public_key, 3),
        "statement alg is the key's"
    );
    let signature = get_text(statement, "sig").unwrap().as_bytes().unwrap();
    verify(&public_key, &[&raw[..], &[7u8; 32]].concat(), signature);
    (auth_data.credential_id, public_key, auth_data.counter)
}

/// getAssertion (or getNextAssertion), checked against `public_key`.
fn check_assertion(body: &Value, cdh: &[u8; 32], public_key: &Value) -> AuthData {
    let raw = get(body, 2).unwrap().as_bytes().unwrap();
    verify(
        public_key,
        &[&raw[..], cdh].concat(),
        get(body, 3).unwrap().as_bytes().unwrap(),
    );
    parse_auth_data(raw)
}

fn with_options(mut request: Value, key: i64, options: Vec<(Value, Value)>) -> Value {
    if let Value::Map(entries) = &mut request {
        entries.push((int(key), map(options)));
    }
    request
}

#[test]
fn get_info_over_usb() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    let (status, info) = call(&mut channel, GET_INFO, None);
    assert_eq!(status, 0);
    let info = info.unwrap();
    let versions = get(&info, 1).unwrap().as_array().unwrap();
    for version in ["U2F_V2", "FIDO_2_0", "FIDO_2_1", "FIDO_2_3"] {
        assert!(versions.contains(&text(version)), "{version}");
    }
    assert_eq!(
        get(&info, 3).unwrap().as_bytes().unwrap().len(),
        16,
        "aaguid"
    );
    let options = get(&info, 4).unwrap();
    assert_eq!(get_text(options, "rk"), Some(&Value::Bool(true)));
    assert_eq!(get_text(options, "up"), Some(&Value::Bool(true)));
    assert_eq!(get_text(options, "plat"), Some(&Value::Bool(false)));
    assert_eq!(as_int(get(&info, 5).unwrap()), 7609, "maxMsgSize");
    assert!(
        as_int(get(&info, 7).unwrap()) >= 1,
        "maxCredentialCountInList"
    );
    assert!(
        as_int(get(&info, 8).unwrap()) <= 128,
        "maxCredentialIdLength"
    );
    let algs: Vec<i64> = get(&info, 0x0A)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| as_int(get_text(p, "alg").unwrap()))
        .collect();
    assert_eq!(algs, [-7, -8]);
    assert!(get(&info, 0x0E).is_some(), "firmwareVersion");
    assert!(
        as_int(get(&info, 0x14).unwrap()) > 1000,
        "remainingDiscoverableCredentials on a 16 MiB image"
    );
}

#[test]
fn algorithms_in_the_clients_order() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    let (_, pk, _) = register(&mut channel, "example.com", b"u", &[-8, -7], false);
    assert_eq!(get(&pk, 3), Some(&int(-8)));
    let (_, pk, _) = register(&mut channel, "example.com", b"u", &[-65535, -7, -8], false);
    assert_eq!(get(&pk, 3), Some(&int(-7)), "unknown algorithms skipped");
    let (status, _) = call(
        &mut channel,
        MAKE_CREDENTIAL,
        Some(make_credential_request("example.com", b"u", &[-257], false)),
    );
    assert_eq!(status, 0x26, "CTAP2_ERR_UNSUPPORTED_ALGORITHM");
}

#[test]
fn nine_aws_users_each_sign_with_their_own_credential() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    let rp = "signin.aws.amazon.com";
    let users: Vec<String> = std::iter::once("root".to_string())
        .chain((1..=8).map(|i| format!("iam-user-{i}")))
        .collect();
    let credentials: Vec<_> = users
        .iter()
        .map(|u| register(&mut channel, rp, u.as_bytes(), &[-7], false))
        .collect();
    let mut last_counter = 0;
    for (i, (id, public_key, _)) in credentials.iter().enumerate() {
        let cdh = [i as u8 + 1; 32];
        let (status, body) = call(
            &mut channel,
            GET_ASSERTION,
            Some(get_assertion_request(rp, &cdh, &[id])),
        );
        assert_eq!(status, 0);
        let body = body.unwrap();
        assert_eq!(
            get_text(get(&body, 1).unwrap(), "id")
                .unwrap()
                .as_bytes()
                .unwrap(),
            id,
            "its own credential"
        );
        let auth_data = check_assertion(&body, &cdh, public_key);
        assert!(auth_data.counter > last_counter);
        last_counter = auth_data.counter;
        // Another user's key does not verify this user's signature.
        let (_, other_key, _) = &credentials[(i + 1) % credentials.len()];
        let raw = get(&body, 2).unwrap().as_bytes().unwrap();
        let result = std::panic::catch_unwind(|| {
            verify(
                other_key,
                &[&raw[..], &cdh].concat(),
                get(&body, 3).unwrap().as_bytes().unwrap(),
            )
        });
        assert!(result.is_err(), "signatures are per credential");
    }
    // A credential ID presented to another RP is nobody's.
    let (status, _) = call(
        &mut channel,
        GET_ASSERTION,
        Some(get_assertion_request(
            "evil.example",
            &[0; 32],
            &[&credentials[0].0],
        )),
    );
    assert_eq!(status, 0x2E);
}

#[test]
fn exclude_list_and_discoverable_credentials() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    let rp = "aws.amazon.com";
    let mut created = Vec::new();
    for user in ["root", "alice", "bob"] {
        created.push((
            user,
            register(&mut channel, rp, user.as_bytes(), &[-7], true),
        ));
    }
    // Same RP and user.id: replaced, not added.
    let replacement = register(&mut channel, rp, b"alice", &[-8], true);
    created[1].1 = replacement;

    let exclude = with_options(
        make_credential_request(rp, b"carol", &[-7], false),
        5,
        vec![],
    );
    let exclude = match exclude {
        Value::Map(mut entries) => {
            entries.pop();
            entries.push((
                int(5),
                Value::Array(vec![map(vec![
                    (text("id"), bytes(&created[0].1 .0)),
                    (text("type"), text("public-key")),
                ])]),
            ));
            Value::Map(entries)
        }
        _ => unreachable!(),
    };
    assert_eq!(
        call(&mut channel, MAKE_CREDENTIAL, Some(exclude)).0,
        0x19,
        "CTAP2_ERR_CREDENTIAL_EXCLUDED"
    );

    let cdh = [9u8; 32];
    let (status, body) = call(
        &mut channel,
        GET_ASSERTION,
        Some(get_assertion_request(rp, &cdh, &[])),
    );
    assert_eq!(status, 0);
    let mut body = body.unwrap();
    assert_eq!(as_int(get(&body, 5).unwrap()), 3, "numberOfCredentials");
    let mut seen = Vec::new();
    for step in 0..3 {
        if step > 0 {
            let (status, next) = call(&mut channel, GET_NEXT_ASSERTION, None);
            assert_eq!(status, 0);
            body = next.unwrap();
        }
        let user_id = get_text(get(&body, 4).expect("user entity"), "id")
            .unwrap()
            .as_bytes()
            .unwrap()
            .clone();
        let (_, (id, public_key, _)) = created
            .iter()
            .find(|(u, _)| u.as_bytes() == user_id.as_slice())
            .unwrap();
        assert_eq!(
            get_text(get(&body, 1).unwrap(), "id")
                .unwrap()
                .as_bytes()
                .unwrap(),
            id
        );
        check_assertion(&body, &cdh, public_key);
        seen.push(String::from_utf8(user_id).unwrap());
    }
    assert_eq!(
        seen,
        ["alice", "bob", "root"],
        "newest first (alice was replaced last)"
    );
    assert_eq!(call(&mut channel, GET_NEXT_ASSERTION, None).0, 0x30);
    assert_eq!(
        call(
            &mut channel,
            GET_ASSERTION,
            Some(get_assertion_request("nobody.example", &cdh, &[]))
        )
        .0,
        0x2E
    );
}

#[test]
fn silent_probe_and_presence_denied() {
    let key = Key::start(PresenceMode::Deny);
    let mut channel = key.channel();
    let (status, _) = call(
        &mut channel,
        MAKE_CREDENTIAL,
        Some(make_credential_request("example.com", b"u", &[-7], false)),
    );
    assert_eq!(status, 0x27, "CTAP2_ERR_OPERATION_DENIED");
    assert_eq!(call(&mut channel, SELECTION, None).0, 0x27);
    // A U2F registration is refused too, while up=false probes need no touch.
    let (_, sw) = channel
        .msg(&[&[0u8, 1, 0, 0, 0, 0, 64][..], &[0u8; 64]].concat())
        .unwrap();
    assert_eq!(sw, 0x6985);
}

#[test]
fn up_false_probe_signs_without_a_touch() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    let (id, public_key, _) = register(&mut channel, "example.com", b"u", &[-7], false);
    let cdh = [4u8; 32];
    let request = with_options(
        get_assertion_request("example.com", &cdh, &[&id]),
        5,
        vec![(text("up"), Value::Bool(false))],
    );
    let (status, body) = call(&mut channel, GET_ASSERTION, Some(request));
    assert_eq!(status, 0);
    let auth_data = check_assertion(&body.unwrap(), &cdh, &public_key);
    assert_eq!(auth_data.flags & 1, 0, "UP clear");
    assert_eq!(call(&mut channel, SELECTION, None).0, 0);
}

#[test]
fn keepalives_while_waiting_and_cancel() {
    // No one answers the prompt: the request waits.
    let key = Key::start(PresenceMode::Prompt);
    let mut channel = key.channel();
    channel.keepalives.clear();
    channel
        .send(
            ctaphid::CBOR,
            &request(
                MAKE_CREDENTIAL,
                Some(&make_credential_request("example.com", b"u", &[-7], false)),
            ),
        )
        .unwrap();
    let started = Instant::now();
    // Watch keepalives for half a second, then cancel.
    let mut keepalives = Vec::new();
    while started.elapsed() < Duration::from_millis(500) {
        let report = channel.device.read_report(Duration::from_secs(1)).unwrap();
        assert_eq!(report[4], ctaphid::KEEPALIVE);
        keepalives.push((report[7], Instant::now()));
    }
    assert!(
        keepalives.iter().all(|(status, _)| *status == 2),
        "STATUS_UPNEEDED"
    );
    let first = keepalives[0].1.duration_since(started);
    assert!(
        first < Duration::from_millis(100),
        "first keepalive after {first:?}"
    );
    // The key sends one every 50 ms; what the client sees also holds loopback TCP and thread
    // wake-ups, so the wall-clock bound here is the spec's 100 ms (§11.2.9.1.7).
    let gaps: Vec<Duration> = keepalives
        .windows(2)
        .map(|pair| pair[1].1.duration_since(pair[0].1))
        .collect();
    let largest = gaps.iter().max().unwrap();
    println!(
        "keepalive gaps over USB/IP: {} keepalives in 500 ms, largest gap {largest:?}",
        keepalives.len()
    );
    assert!(
        *largest <= Duration::from_millis(100),
        "keepalive gap {largest:?}"
    );
    channel.send(ctaphid::CANCEL, &[]).unwrap();
    let (command, payload) = channel.receive().unwrap();
    assert_eq!(
        (command, payload),
        (ctaphid::CBOR, vec![0x2D]),
        "CTAP2_ERR_KEEPALIVE_CANCEL"
    );
}

#[test]
fn an_unanswered_touch_times_out_after_30_seconds() {
    let key = Key::start(PresenceMode::Prompt);
    let mut channel = key.channel();
    let started = Instant::now();
    let (status, _) = call(&mut channel, SELECTION, None);
    assert_eq!(status, 0x2F, "CTAP2_ERR_USER_ACTION_TIMEOUT");
    let waited = started.elapsed();
    // Never early; the upper bound only catches a wait that never ends (a loaded CI machine
    // can delay the answer by seconds, which is not what this test is about).
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(45),
        "{waited:?}"
    );
    assert!(!channel.keepalives.is_empty());
}

#[test]
fn reset_within_ten_seconds_of_power_up() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    let (id, _, _) = register(&mut channel, "example.com", b"u", &[-7], true);
    assert_eq!(call(&mut channel, RESET, None).0, 0);
    assert_eq!(
        call(
            &mut channel,
            GET_ASSERTION,
            Some(get_assertion_request("example.com", &[0; 32], &[&id]))
        )
        .0,
        0x2E
    );
    assert_eq!(
        call(
            &mut channel,
            GET_ASSERTION,
            Some(get_assertion_request("example.com", &[0; 32], &[]))
        )
        .0,
        0x2E
    );
}

#[test]
fn reset_refused_after_ten_seconds() {
    let key = Key::start(PresenceMode::Auto);
    std::thread::sleep(Duration::from_millis(10_100));
    let mut channel = key.channel();
    assert_eq!(
        call(&mut channel, RESET, None).0,
        0x30,
        "CTAP2_ERR_NOT_ALLOWED"
    );
}

#[test]
fn malformed_requests_get_errors_and_the_key_keeps_working() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    let cases: Vec<(Vec<u8>, &[u8])> = vec![
        (vec![MAKE_CREDENTIAL, 0xa2, 0x01], &[0x12]),
        (vec![MAKE_CREDENTIAL, 0xff], &[0x11, 0x12]),
        (
            request(MAKE_CREDENTIAL, Some(&map(vec![(int(1), bytes(&[0; 32]))]))),
            &[0x14],
        ),
        (
            request(
                MAKE_CREDENTIAL,
                Some(&map(vec![(int(1), text("not bytes")), (int(2), int(5))])),
            ),
            &[0x11, 0x12, 0x14],
        ),
        (request(GET_ASSERTION, Some(&int(7))), &[0x11, 0x12]),
        (vec![0x40], &[0x01]),
        (vec![0x41], &[0x11, 0x12, 0x14]),
        (vec![0x55], &[0x01]),
        (
            request(
                MAKE_CREDENTIAL,
                Some(&make_credential_request(
                    &"x".repeat(400),
                    b"u",
                    &[-7],
                    false,
                )),
            ),
            &[0x11, 0x12, 0x15],
        ),
    ];
    for (request, allowed) in cases {
        let (status, body) = channel.cbor(&request).unwrap();
        assert!(
            allowed.contains(&status),
            "request {:02x?}: status {status:#04x}",
            &request[..request.len().min(8)]
        );
        assert!(body.is_empty());
    }
    register(&mut channel, "example.com", b"u", &[-7], false);
}

#[test]
fn ctaphid_errors_on_the_wire() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    let cid = channel.cid;
    let error = |channel: &mut Channel, packet: [u8; 64], target: u32| -> u8 {
        channel.device.write_report(&packet).unwrap();
        let reply = channel.device.read_report(Duration::from_secs(5)).unwrap();
        assert_eq!(u32::from_be_bytes(reply[..4].try_into().unwrap()), target);
        assert_eq!(reply[4], ctaphid::ERROR);
        reply[7]
    };
    let mut packet = ctaphid::packets(cid, 0x99 | 0x80, &[]).remove(0);
    packet[4] = 0xA5;
    assert_eq!(error(&mut channel, packet, cid), 0x01, "ERR_INVALID_CMD");
    let packet = ctaphid::packets(0, ctaphid::PING, b"x").remove(0);
    assert_eq!(
        error(&mut channel, packet, 0),
        0x0B,
        "ERR_INVALID_CHANNEL for CID 0"
    );
    let mut packet = ctaphid::packets(cid, ctaphid::PING, b"x").remove(0);
    packet[5..7].copy_from_slice(&7610u16.to_be_bytes());
    assert_eq!(error(&mut channel, packet, cid), 0x03, "ERR_INVALID_LEN");
    // A message whose continuation comes out of sequence.
    let packets = ctaphid::packets(cid, ctaphid::PING, &[1u8; 100]);
    channel.device.write_report(&packets[0]).unwrap();
    let mut wrong = packets[1];
    wrong[4] = 5;
    assert_eq!(error(&mut channel, wrong, cid), 0x04, "ERR_INVALID_SEQ");
    // Another CID interrupting a message in progress, one INIT never handed out: busy, as any
    // other channel would be while a transaction is in progress (CTAP 2.1 §11.2.5.1).
    channel.device.write_report(&packets[0]).unwrap();
    let other = ctaphid::packets(cid.wrapping_add(1), ctaphid::PING, b"x").remove(0);
    assert_eq!(
        error(&mut channel, other, cid.wrapping_add(1)),
        0x06,
        "ERR_CHANNEL_BUSY"
    );
    // The abandoned message times out.
    let reply = channel.device.read_report(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (reply[4], reply[7]),
        (ctaphid::ERROR, 0x05),
        "ERR_MSG_TIMEOUT"
    );
    assert_eq!(channel.transact(ctaphid::PING, b"fine").unwrap().1, b"fine");
}

/// How Chrome's `device/fido` picks a protocol: INIT's capability flags (CBOR set, NMSG clear:
/// both CTAP2 and U2F are there), then getInfo's versions, which name exactly what the key
/// implements (CTAP 2.3 forbids "FIDO_2_2"); U2F (for the appid extension, or a key without
/// CTAP2) answers VERSION over MSG. With alwaysUv on, U2F_V2 leaves the versions, so such a
/// client never falls back to U2F, which cannot verify the user, and MSG refuses.
#[test]
fn chrome_style_version_negotiation() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    let capabilities = channel.init_response[16];
    assert_eq!(capabilities & 0x04, 0x04, "CAPABILITY_CBOR");
    assert_eq!(
        capabilities & 0x08,
        0,
        "no CAPABILITY_NMSG: MSG (U2F) is implemented"
    );
    assert_eq!(capabilities & 0x01, 0x01, "CAPABILITY_WINK");
    let versions = |channel: &mut Channel| -> Vec<String> {
        let (status, info) = call(channel, GET_INFO, None);
        assert_eq!(status, 0);
        get(&info.unwrap(), 1)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_text().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        versions(&mut channel),
        ["U2F_V2", "FIDO_2_0", "FIDO_2_1", "FIDO_2_3"]
    );
    assert_eq!(
        channel
            .msg(&[0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00])
            .unwrap(),
        (b"U2F_V2".to_vec(), 0x9000),
        "U2F VERSION (extended-length APDU, as Chrome sends it)"
    );
    // alwaysUv (no PIN: no token needed).
    let toggle = map(vec![(int(1), int(2))]);
    assert_eq!(call(&mut channel, 0x0D, Some(toggle)).0, 0);
    assert_eq!(versions(&mut channel), ["FIDO_2_0", "FIDO_2_1", "FIDO_2_3"]);
    let mut register = vec![0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 64];
    register.extend_from_slice(&[1; 64]);
    register.extend_from_slice(&[0, 0]);
    assert_eq!(channel.msg(&register).unwrap().1, 0x6986, "U2F refused");
}

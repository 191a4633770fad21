//! The virtual key as CI uses it: several keys from one runner, presence under script control
//! through the control socket (and its command-line client), and the in-process Rust API.

use std::process::Command;
use std::time::Duration;

use e2e_tests::ctap::*;
use e2e_tests::ctaphid::{self, Channel};
use e2e_tests::{runner_binary, usbip, Key};
use usbip_runner::{PresenceMode, ServerConfig, StateLocation};

fn control_key(keys: usize) -> Key {
    control_key_named(keys, "")
}

/// A key under control with a socket of its own (`name` tells tests with as many keys apart).
fn control_key_named(keys: usize, name: &str) -> Key {
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        PresenceMode::Control,
        StateLocation::Ephemeral,
    );
    config.keys = keys;
    let socket = std::env::temp_dir().join(format!(
        "usbip-runner-test-{}-{keys}{name}.sock",
        std::process::id()
    ));
    config.control = Some(socket);
    Key::start_config(config)
}

/// Send makeCredential and wait until the key reports it waits for a touch.
fn start_waiting(channel: &mut Channel) {
    let body = make_credential_request("example.com", b"u", &[-7], false);
    send_and_wait(channel, &request(0x01, Some(&body)));
}

/// Send a CTAP2 request and wait until the key reports it waits for a touch.
fn send_and_wait(channel: &mut Channel, ctap2_request: &[u8]) {
    channel.send(ctaphid::CBOR, ctap2_request).unwrap();
    let report = channel.device.read_report(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (report[4], report[7]),
        (ctaphid::KEEPALIVE, 2),
        "STATUS_UPNEEDED"
    );
}

fn finish(channel: &mut Channel) -> u8 {
    let (command, payload) = channel.receive().unwrap();
    assert_eq!(command, ctaphid::CBOR);
    payload[0]
}

#[test]
fn several_independent_keys_attached_at_once() {
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        PresenceMode::Auto,
        StateLocation::Ephemeral,
    );
    config.keys = 3;
    let key = Key::start_config(config);
    let listed: Vec<String> = usbip::list(key.addr())
        .unwrap()
        .into_iter()
        .map(|d| d.bus_id)
        .collect();
    assert_eq!(listed, ["1-1", "1-2", "1-3"]);
    let mut channels: Vec<Channel> = ["1-1", "1-2", "1-3"]
        .iter()
        .map(|bus| Channel::open(key.attach_bus(bus)).unwrap())
        .collect();
    // A credential made on one key is unknown to the others.
    let (status, body) = channels[0]
        .cbor(&request(
            0x01,
            Some(&make_credential_request("example.com", b"u", &[-7], false)),
        ))
        .unwrap();
    assert_eq!(status, 0);
    let id = parse_auth_data(
        get(&decode_body(&body).unwrap(), 2)
            .unwrap()
            .as_bytes()
            .unwrap(),
    )
    .credential_id;
    let assertion = request(
        0x02,
        Some(&get_assertion_request("example.com", &[0; 32], &[&id])),
    );
    assert_eq!(channels[0].cbor(&assertion).unwrap().0, 0);
    assert_eq!(channels[1].cbor(&assertion).unwrap().0, 0x2E);
    assert_eq!(channels[2].cbor(&assertion).unwrap().0, 0x2E);
    let serials: std::collections::HashSet<String> = channels
        .iter()
        .map(|c| c.device.descriptors.serial.clone())
        .collect();
    assert_eq!(serials.len(), 3, "each key its own serial number");
}

#[test]
fn the_control_socket_approves_denies_and_times_out() {
    let key = control_key(1);
    let server = key.server().unwrap();
    let socket = server.control_socket().unwrap().to_path_buf();
    let mut channel = key.channel();

    start_waiting(&mut channel);
    assert_eq!(server.control("status").unwrap(), "waiting 1-1");
    // Through the command-line client, as a CI script would.
    let out = Command::new(runner_binary())
        .args(["control", socket.to_str().unwrap(), "approve"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok waiting");
    assert_eq!(finish(&mut channel), 0, "approved");

    start_waiting(&mut channel);
    assert_eq!(
        usbip_runner::control::send(&socket, "deny 1-1").unwrap(),
        "ok waiting"
    );
    assert_eq!(finish(&mut channel), 0x27, "CTAP2_ERR_OPERATION_DENIED");

    start_waiting(&mut channel);
    assert_eq!(
        usbip_runner::control::send(&socket, "timeout").unwrap(),
        "ok waiting"
    );
    assert_eq!(finish(&mut channel), 0x2F, "CTAP2_ERR_USER_ACTION_TIMEOUT");

    // An answer given before the request is kept for it.
    assert_eq!(
        usbip_runner::control::send(&socket, "approve").unwrap(),
        "ok armed"
    );
    let (status, _) = channel.cbor(&request(0x0B, None)).unwrap();
    assert_eq!(status, 0, "selection approved in advance");
    assert!(usbip_runner::control::send(&socket, "jump")
        .unwrap()
        .starts_with("error"));
    assert!(usbip_runner::control::send(&socket, "approve 9-9")
        .unwrap()
        .starts_with("error"));
}

/// longTouchForReset on the virtual key: once enabled, authenticatorReset waits for `hold`; a
/// short touch (`approve`) answers nothing, given while it waits or armed before it.
#[test]
fn with_long_touch_for_reset_enabled_reset_waits_for_hold() {
    let key = control_key_named(1, "-long");
    let server = key.server().unwrap();
    let socket = server.control_socket().unwrap().to_path_buf();
    let mut channel = key.channel();
    let long_touch = |channel: &mut Channel| {
        let (_, info) = channel.cbor(&request(0x04, None)).unwrap();
        get(&decode_body(&info).unwrap(), 0x18).cloned()
    };
    assert_eq!(long_touch(&mut channel), Some(ciborium::Value::Bool(false)));
    let enable = request(0x0D, Some(&map(vec![(int(1), int(4))])));
    assert_eq!(
        channel.cbor(&enable).unwrap().0,
        0,
        "no PIN: no token needed"
    );
    assert_eq!(long_touch(&mut channel), Some(ciborium::Value::Bool(true)));

    send_and_wait(&mut channel, &[0x07]);
    let out = Command::new(runner_binary())
        .args(["control", socket.to_str().unwrap(), "approve"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the command-line client reports the error"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "error 1-1 waits for a long touch: hold 1-1"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.control("status").unwrap(), "waiting 1-1", "still");
    assert_eq!(server.control("hold").unwrap(), "ok waiting");
    assert_eq!(finish(&mut channel), 0, "reset with the long touch");
    assert_eq!(
        long_touch(&mut channel),
        Some(ciborium::Value::Bool(false)),
        "off after reset"
    );

    // Armed in advance, a short touch is kept for a request it answers, not spent on a reset.
    assert_eq!(channel.cbor(&enable).unwrap().0, 0);
    assert_eq!(server.control("approve").unwrap(), "ok armed");
    send_and_wait(&mut channel, &[0x07]);
    assert_eq!(server.control("timeout").unwrap(), "ok waiting");
    assert_eq!(finish(&mut channel), 0x2F);
    assert_eq!(
        long_touch(&mut channel),
        Some(ciborium::Value::Bool(true)),
        "not reset"
    );
    let (status, _) = channel.cbor(&request(0x0B, None)).unwrap();
    assert_eq!(status, 0, "selection took the armed touch");
}

#[test]
fn the_control_socket_addresses_one_key_of_several() {
    let key = control_key(2);
    let server = key.server().unwrap();
    let mut first = Channel::open(key.attach_bus("1-1")).unwrap();
    let mut second = Channel::open(key.attach_bus("1-2")).unwrap();
    start_waiting(&mut first);
    start_waiting(&mut second);
    assert_eq!(server.control("status").unwrap(), "waiting 1-1 1-2");
    assert!(
        server.control("approve").unwrap().starts_with("error"),
        "ambiguous"
    );
    assert_eq!(server.control("deny 1-2").unwrap(), "ok waiting");
    assert_eq!(finish(&mut second), 0x27);
    assert_eq!(server.control("approve 1-1").unwrap(), "ok waiting");
    assert_eq!(finish(&mut first), 0);
}

#[test]
fn trace_writes_one_json_line_per_request_and_response_without_secrets() {
    use e2e_tests::pin::PinClient;
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        PresenceMode::Auto,
        StateLocation::Ephemeral,
    );
    config.trace = Some(trace.clone());
    let key = Key::start_config(config);
    let mut channel = key.channel();
    let client = PinClient::new(&mut channel, 2, 5);
    assert_eq!(client.set_pin(&mut channel, "trace-secret-pin"), 0);
    let (status, body) = channel
        .cbor(&request(
            0x01,
            Some(&make_credential_request("example.com", b"u", &[-7], false)),
        ))
        .unwrap();
    assert_eq!(status, 0);
    let body = decode_body(&body).unwrap();
    let signature = get_text(get(&body, 3).unwrap(), "sig")
        .unwrap()
        .as_bytes()
        .unwrap()
        .clone();
    let (_, sw) = channel.msg(&[0, 3, 0, 0]).unwrap();
    assert_eq!(sw, 0x9000);
    drop(channel);
    drop(key);

    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // getKeyAgreement, setPIN, makeCredential, U2F version: a request and a response each.
    assert_eq!(lines.len(), 8, "{text}");
    assert!(
        lines[4].contains("\"command\":\"makeCredential\"")
            && lines[4].contains("\"dir\":\"request\"")
    );
    assert!(lines[4].contains("example.com"), "text parameters are kept");
    assert!(lines[5].contains("\"status\":0"));
    assert!(lines[7].contains("\"sw\":\"9000\""));
    // Nothing secret: not the PIN, not the signature, not any raw bytes.
    assert!(!text.contains("trace-secret-pin"));
    let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!text.contains(&hex[..16]));
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert_eq!(value["key"], "1-1");
    }
}

/// The runner's own log, at its most verbose level, holds no secret either: not the PIN, not
/// its hash (in hex or as a Debug list of bytes), not the pinUvAuthToken, not a signature; and
/// written to a file it is plain text.
#[test]
fn logs_at_trace_level_hold_no_secret() {
    use e2e_tests::pin::PinClient;
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("runner.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let key = Key::spawn_logging(
        &["--ephemeral", "--presence", "auto", "--trace", "-"],
        &[],
        "trace",
        log,
    );
    let pin = "log-secret-pin-7";
    let mut channel = key.channel();
    let client = PinClient::new(&mut channel, 2, 5);
    assert_eq!(client.set_pin(&mut channel, pin), 0);
    let token = client
        .token(&mut channel, pin, Some(0x01 | 0x02), Some("example.com"))
        .unwrap();
    let mut make = make_credential_request("example.com", b"u", &[-7], false);
    if let ciborium::Value::Map(entries) = &mut make {
        entries.push((int(8), bytes(&PinClient::mac(2, &token, &[7u8; 32]))));
        entries.push((int(9), int(2)));
    }
    let (status, body) = channel.cbor(&request(0x01, Some(&make))).unwrap();
    assert_eq!(status, 0);
    // A wrong PIN too: the failure path logs nothing secret either.
    let wrong = PinClient::new(&mut channel, 2, 6);
    assert!(wrong
        .token(&mut channel, "wrong-pin-1", None, None)
        .is_err());
    let body = decode_body(&body).unwrap();
    let signature = get_text(get(&body, 3).unwrap(), "sig")
        .unwrap()
        .as_bytes()
        .unwrap()
        .clone();
    drop(channel);
    assert!(key.terminate(), "the runner exits cleanly");

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("makeCredential"),
        "the log has the trace lines: {text}"
    );
    // Written to a file, not a terminal: plain text, no ANSI colour escapes.
    assert!(
        !text.contains('\u{1b}'),
        "colour escapes in a log file: {text:.300}"
    );
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    let debug_list = |bytes: &[u8]| -> String {
        let items: Vec<String> = bytes[..6].iter().map(u8::to_string).collect();
        items.join(", ")
    };
    let pin_hash = Sha256::digest(pin.as_bytes());
    for (what, needle) in [
        ("the PIN", pin.to_string()),
        ("the wrong PIN", "wrong-pin-1".to_string()),
        ("the PIN hash in hex", hex(&pin_hash[..8])),
        ("the PIN hash as bytes", debug_list(&pin_hash)),
        ("the token in hex", hex(&token[..8])),
        ("the token as bytes", debug_list(&token)),
        ("the signature in hex", hex(&signature[..8])),
        ("the signature as bytes", debug_list(&signature)),
    ] {
        assert!(!text.contains(&needle), "{what} is in the log");
    }
}

/// `--max-credentials N`: a key that is full after N discoverable credentials, so a CI job can
/// test an RP's "key full" path in seconds; the remaining count is exact all the way down.
#[test]
fn max_credentials_makes_a_small_exact_capacity() {
    let key = Key::spawn(&[
        "--ephemeral",
        "--presence",
        "auto",
        "--max-credentials",
        "20",
    ]);
    let mut channel = key.channel();
    let remaining = |channel: &mut Channel<_>| {
        let (status, body) = channel.cbor(&request(0x04, None)).unwrap();
        assert_eq!(status, 0);
        as_int(get(&decode_body(&body).unwrap(), 0x14).expect("remainingDiscoverableCredentials"))
    };
    assert_eq!(remaining(&mut channel), 20);
    for i in 0..20 {
        let user = format!("user-{i}");
        let make = make_credential_request("full.example", user.as_bytes(), &[-7], true);
        let (status, _) = channel.cbor(&request(0x01, Some(&make))).unwrap();
        assert_eq!(status, 0, "credential {i}");
        assert_eq!(
            remaining(&mut channel),
            19 - i,
            "each creation takes exactly one place"
        );
    }
    let make = make_credential_request("full.example", b"one-more", &[-7], true);
    let (status, _) = channel.cbor(&request(0x01, Some(&make))).unwrap();
    assert_eq!(status, 0x28, "0 remaining: CTAP2_ERR_KEY_STORE_FULL");
    // Replacing a user's credential needs no room; non-discoverable ones need none either.
    let again = make_credential_request("full.example", b"user-3", &[-7], true);
    assert_eq!(channel.cbor(&request(0x01, Some(&again))).unwrap().0, 0);
    let plain = make_credential_request("full.example", b"one-more", &[-7], false);
    assert_eq!(channel.cbor(&request(0x01, Some(&plain))).unwrap().0, 0);
    // A discovery sign-in on the full key finds all 20.
    let (status, body) = channel
        .cbor(&request(
            0x02,
            Some(&get_assertion_request("full.example", &[1; 32], &[])),
        ))
        .unwrap();
    assert_eq!(status, 0);
    assert_eq!(as_int(get(&decode_body(&body).unwrap(), 5).unwrap()), 20);
}

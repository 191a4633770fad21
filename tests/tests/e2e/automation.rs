//! Test automation over the control socket, with the key driven over USB/IP as a browser
//! would: credentials seeded with known private keys sign (every signature verified with the
//! seeded key), registrations are read back with their private keys, counters, events, and
//! every refusal (bad JSON, bad key, duplicate ID, full store, a key not opted in).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;

use e2e_tests::ctap::*;
use e2e_tests::ctaphid::Channel;
use e2e_tests::{runner_binary, Key};
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::EncodePrivateKey;
use serde_json::{json, Value as Json};
use usbip_runner::automation::params::{decode_base64, encode_base64url};
use usbip_runner::{PresenceMode, ServerConfig, StateLocation};

const RP: &str = "signin.aws.amazon.com";

fn socket_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "usbip-runner-automation-{}-{name}.sock",
        std::process::id()
    ))
}

/// An ephemeral key that approves every touch, with a control socket.
fn start_key(name: &str, configure: impl FnOnce(&mut ServerConfig)) -> (Key, std::path::PathBuf) {
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        PresenceMode::Auto,
        StateLocation::Ephemeral,
    );
    let socket = socket_path(name);
    config.control = Some(socket.clone());
    configure(&mut config);
    (Key::start_config(config), socket)
}

fn send(socket: &std::path::Path, line: &str) -> String {
    usbip_runner::control::send(socket, line).unwrap()
}

/// A P-256 key of the test's own, and its PKCS#8 in base64url.
fn test_key(seed: u8) -> (p256::ecdsa::SigningKey, String) {
    let mut secret = [seed; 32];
    secret[0] = 0x10;
    let key = p256::ecdsa::SigningKey::from_slice(&secret).unwrap();
    let der = p256::SecretKey::from_slice(&secret)
        .unwrap()
        .to_pkcs8_der()
        .unwrap();
    (key, encode_base64url(der.as_bytes()))
}

fn params(id: &[u8], resident: bool, private_key: &str, sign_count: u32) -> Json {
    let mut params = json!({
        "credentialId": encode_base64url(id),
        "isResidentCredential": resident,
        "rpId": RP,
        "privateKey": private_key,
        "signCount": sign_count,
    });
    if resident {
        params["userHandle"] = json!(encode_base64url(b"seeded-user"));
        params["userName"] = json!("alice@example.com");
        params["userDisplayName"] = json!("Alice");
    }
    params
}

/// A getAssertion over USB/IP; the signature is verified with `key`. Returns (credential ID,
/// counter, user handle).
fn sign_in(
    channel: &mut Channel,
    allow: &[&[u8]],
    key: &p256::ecdsa::VerifyingKey,
) -> (Vec<u8>, u32, Option<Vec<u8>>) {
    let cdh = [0x33u8; 32];
    let (status, body) = channel
        .cbor(&request(
            0x02,
            Some(&get_assertion_request(RP, &cdh, allow)),
        ))
        .unwrap();
    assert_eq!(status, 0, "getAssertion");
    let body = decode_body(&body).unwrap();
    let auth_data = get(&body, 2).unwrap().as_bytes().unwrap().clone();
    let signature =
        p256::ecdsa::Signature::from_der(get(&body, 3).unwrap().as_bytes().unwrap()).unwrap();
    key.verify(&[&auth_data[..], &cdh].concat(), &signature)
        .expect("signed with the seeded private key");
    let id = get_text(get(&body, 1).unwrap(), "id")
        .unwrap()
        .as_bytes()
        .unwrap()
        .clone();
    let user = get(&body, 4)
        .and_then(|u| get_text(u, "id"))
        .and_then(|id| id.as_bytes().cloned());
    (id, parse_auth_data(&auth_data).counter, user)
}

fn credentials(socket: &std::path::Path) -> Vec<Json> {
    let reply = send(socket, "credentials 1-1");
    serde_json::from_str(&reply).unwrap_or_else(|_| panic!("a JSON array: {reply}"))
}

/// The public key of an exported credential's PKCS#8 private key.
fn exported_key(credential: &Json) -> p256::ecdsa::VerifyingKey {
    use p256::pkcs8::DecodePrivateKey;
    let der = decode_base64(credential["privateKey"].as_str().unwrap()).unwrap();
    *p256::ecdsa::SigningKey::from_pkcs8_der(&der)
        .unwrap()
        .verifying_key()
}

#[test]
fn seeded_credentials_sign_and_registrations_are_read_back_with_their_keys() {
    let (key, socket) = start_key("seed", |_| {});
    let mut channel = key.channel();
    let (listed_key, listed_pkcs8) = test_key(1);
    let (resident_key, resident_pkcs8) = test_key(2);
    // As Chromium's virtual authenticator makes them: 16 random bytes.
    let listed_id = *b"0123456789abcdef";
    let resident_id = *b"resident-id-0001";
    assert_eq!(
        send(
            &socket,
            &format!(
                "add-credential 1-1 {}",
                params(&listed_id, false, &listed_pkcs8, 7)
            )
        ),
        "ok added"
    );
    assert_eq!(
        send(
            &socket,
            &format!(
                "add-credential 1-1 {}",
                params(&resident_id, true, &resident_pkcs8, 0)
            )
        ),
        "ok added"
    );

    // The non-discoverable one, by its ID in an allow list: counting on from signCount.
    let (id, counter, _) = sign_in(&mut channel, &[&listed_id], listed_key.verifying_key());
    assert_eq!((id.as_slice(), counter), (&listed_id[..], 8));
    // The discoverable one, found without an allow list, with its user handle.
    let (id, counter, user) = sign_in(&mut channel, &[], resident_key.verifying_key());
    assert_eq!((id.as_slice(), counter), (&resident_id[..], 1));
    assert_eq!(user.as_deref(), Some(&b"seeded-user"[..]));

    // A registration of the key's own (non-discoverable), read back with its private key.
    let (status, body) = channel
        .cbor(&request(
            0x01,
            Some(&make_credential_request(RP, b"own", &[-7], false)),
        ))
        .unwrap();
    assert_eq!(status, 0);
    let made = parse_auth_data(
        get(&decode_body(&body).unwrap(), 2)
            .unwrap()
            .as_bytes()
            .unwrap(),
    );

    let listed = credentials(&socket);
    assert_eq!(listed.len(), 3, "{listed:?}");
    let by_id = |id: &[u8]| {
        listed
            .iter()
            .find(|c| c["credentialId"] == encode_base64url(id))
            .unwrap_or_else(|| panic!("{} listed", encode_base64url(id)))
            .clone()
    };
    let seeded = by_id(&listed_id);
    assert_eq!(seeded["isResidentCredential"], false);
    assert_eq!(seeded["rpId"], RP);
    assert_eq!(seeded["signCount"], 8);
    assert_eq!(&exported_key(&seeded), listed_key.verifying_key());
    let resident = by_id(&resident_id);
    assert_eq!(resident["isResidentCredential"], true);
    assert_eq!(resident["userHandle"], encode_base64url(b"seeded-user"));
    assert_eq!(resident["userName"], "alice@example.com");
    assert_eq!(resident["userDisplayName"], "Alice");
    assert_eq!(&exported_key(&resident), resident_key.verifying_key());
    // The key's own credential: its exported private key is the one that signs for it.
    let own = by_id(&made.credential_id);
    assert_eq!(own["isResidentCredential"], false);
    let own_key = exported_key(&own);
    let (_, counter, _) = sign_in(&mut channel, &[&made.credential_id], &own_key);
    assert!(counter > made.counter);

    // Exported, then imported into another key: it signs there with its ID and counter.
    let (other, other_socket) = start_key("seed-other", |_| {});
    for credential in &listed {
        assert_eq!(
            send(&other_socket, &format!("add-credential 1-1 {credential}")),
            "ok added"
        );
    }
    let mut other_channel = other.channel();
    let (id, counter, _) = sign_in(&mut other_channel, &[&made.credential_id], &own_key);
    assert_eq!(id, made.credential_id);
    assert!(counter > own["signCount"].as_u64().unwrap() as u32);

    // remove-credential, clear-credentials.
    assert_eq!(
        send(
            &socket,
            &format!("remove-credential 1-1 {}", encode_base64url(&listed_id))
        ),
        "ok removed"
    );
    let (status, _) = channel
        .cbor(&request(
            0x02,
            Some(&get_assertion_request(RP, &[0; 32], &[&listed_id])),
        ))
        .unwrap();
    assert_eq!(status, 0x2E, "a removed credential no longer signs");
    assert!(
        send(
            &socket,
            &format!(
                "remove-credential 1-1 {}",
                encode_base64url(&made.credential_id)
            )
        )
        .contains("cannot be removed"),
        "a sealed credential holds no state to remove"
    );
    assert_eq!(send(&socket, "clear-credentials 1-1"), "ok removed 1");
    let (status, _) = channel
        .cbor(&request(
            0x02,
            Some(&get_assertion_request(RP, &[0; 32], &[])),
        ))
        .unwrap();
    assert_eq!(status, 0x2E, "nothing left to discover");
}

#[test]
fn set_counter_moves_a_credential_forward_and_never_back() {
    let (key, socket) = start_key("counter", |_| {});
    let mut channel = key.channel();
    let (signing, pkcs8) = test_key(3);
    let id = *b"counted-cred-id!";
    send(
        &socket,
        &format!("add-credential 1-1 {}", params(&id, false, &pkcs8, 100)),
    );
    let b64 = encode_base64url(&id);
    assert!(send(&socket, &format!("set-counter 1-1 {b64} 99"))
        .contains("at 100, and a counter never goes back"));
    assert_eq!(send(&socket, &format!("set-counter 1-1 {b64} 5000")), "ok");
    assert_eq!(
        sign_in(&mut channel, &[&id], signing.verifying_key()).1,
        5001
    );
    assert_eq!(credentials(&socket)[0]["signCount"], 5001);
    assert!(send(&socket, &format!("set-counter 1-1 {b64} x")).starts_with("error set-counter"));
    assert!(send(&socket, "set-counter 1-1 AAAA 1").contains("no such credential"));
}

#[test]
fn events_follow_every_credential_created_and_used() {
    let (key, socket) = start_key("events", |_| {});
    let mut events = UnixStream::connect(&socket).unwrap();
    // A stream that never delivers an event fails the test instead of hanging it.
    events
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    writeln!(events, "events 1-1").unwrap();
    let mut lines = BufReader::new(events.try_clone().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ok events");
    let mut next =
        move || -> Json { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };

    let mut channel = key.channel();
    let (status, body) = channel
        .cbor(&request(
            0x01,
            Some(&make_credential_request(RP, b"evented", &[-7], true)),
        ))
        .unwrap();
    assert_eq!(status, 0);
    let made = parse_auth_data(
        get(&decode_body(&body).unwrap(), 2)
            .unwrap()
            .as_bytes()
            .unwrap(),
    );
    let added = next();
    assert_eq!(added["event"], "credentialAdded");
    assert_eq!(added["params"]["authenticatorId"], "1-1");
    let credential = &added["params"]["credential"];
    assert_eq!(
        credential["credentialId"],
        encode_base64url(&made.credential_id)
    );
    assert_eq!(credential["rpId"], RP);
    assert_eq!(credential["isResidentCredential"], true);
    assert_eq!(credential["userHandle"], encode_base64url(b"evented"));
    assert_eq!(credential["signCount"], made.counter);
    assert!(
        credential.get("privateKey").is_none(),
        "no key material in events"
    );

    let (status, body) = channel
        .cbor(&request(
            0x02,
            Some(&get_assertion_request(RP, &[1; 32], &[&made.credential_id])),
        ))
        .unwrap();
    assert_eq!(status, 0);
    let counter = parse_auth_data(
        get(&decode_body(&body).unwrap(), 2)
            .unwrap()
            .as_bytes()
            .unwrap(),
    )
    .counter;
    let asserted = next();
    assert_eq!(asserted["event"], "credentialAsserted");
    assert_eq!(
        asserted["params"]["credential"]["credentialId"],
        encode_base64url(&made.credential_id)
    );
    assert_eq!(asserted["params"]["credential"]["rpId"], RP);
    assert_eq!(asserted["params"]["credential"]["signCount"], counter);

    let b64 = encode_base64url(&made.credential_id);
    assert_eq!(send(&socket, &format!("set-counter 1-1 {b64} 900")), "ok");
    assert_eq!(next()["event"], "credentialUpdated");
    assert_eq!(
        send(&socket, &format!("remove-credential 1-1 {b64}")),
        "ok removed"
    );
    let deleted = next();
    assert_eq!(deleted["event"], "credentialDeleted");
    assert_eq!(deleted["params"]["credentialId"], b64);
}

#[test]
fn bad_requests_get_a_reason_and_change_nothing() {
    let (key, socket) = start_key("refusals", |config| config.max_credentials = Some(2));
    let mut channel = key.channel();
    let (_, pkcs8) = test_key(4);
    let add = |params: &Json| send(&socket, &format!("add-credential 1-1 {params}"));
    assert!(
        send(&socket, "add-credential 1-1 {not json").starts_with("error add-credential: bad JSON")
    );
    assert!(send(&socket, "add-credential 1-1 {\"rpId\": \"x\"}").contains("missing field"));
    let mut bad_key = params(b"id-1", false, &encode_base64url(b"not a key"), 0);
    assert!(
        add(&bad_key).contains("privateKey: not a PKCS#8"),
        "{}",
        add(&bad_key)
    );
    bad_key["privateKey"] = json!("!!!");
    assert!(add(&bad_key).contains("privateKey: not base64url"));
    let mut no_user = params(b"id-2", true, &pkcs8, 0);
    no_user.as_object_mut().unwrap().remove("userHandle");
    assert!(add(&no_user).contains("userHandle"));
    assert!(add(&params(&[7; 129], false, &pkcs8, 0)).contains("credentialId: 1 to 128 bytes"));
    assert_eq!(add(&params(b"id-3", false, &pkcs8, 0)), "ok added");
    assert!(add(&params(b"id-3", false, &pkcs8, 0)).contains("credentialId is on the key"));
    assert_eq!(add(&params(b"id-4", true, &pkcs8, 0)), "ok added");
    assert!(add(&params(b"id-5", true, &pkcs8, 0)).contains("rpId and userHandle"));
    assert!(add(&params(b"id-6", false, &pkcs8, 0)).contains("the key is full"));
    // The full key also refuses a registration: the import counted against its capacity.
    let (status, _) = channel
        .cbor(&request(
            0x01,
            Some(&make_credential_request(RP, b"another", &[-7], true)),
        ))
        .unwrap();
    assert_eq!(status, 0x28, "CTAP2_ERR_KEY_STORE_FULL");
    assert_eq!(credentials(&socket).len(), 2);
    assert!(send(&socket, "credentials 9-9").contains("unknown bus id"));
    assert!(send(&socket, "credentials").contains("name the key"));
    assert!(send(&socket, "remove-credential 1-1 ***").starts_with("error"));
}

#[test]
fn private_keys_cross_only_on_keys_opted_in() {
    let dir = tempfile::tempdir().unwrap();
    let (_key, socket) = start_key("persistent", |config| {
        config.state = StateLocation::Dir(dir.path().to_path_buf())
    });
    let (_, pkcs8) = test_key(5);
    for line in [
        "credentials 1-1".to_string(),
        format!("add-credential 1-1 {}", params(b"id", false, &pkcs8, 0)),
    ] {
        let reply = send(&socket, &line);
        assert!(
            reply.contains("start it with --ephemeral or --allow-key-export"),
            "{reply}"
        );
    }
    // Removing and counting reveal no key: allowed.
    assert_eq!(send(&socket, "clear-credentials 1-1"), "ok removed 0");

    let dir = tempfile::tempdir().unwrap();
    let (_key, socket) = start_key("opted-in", |config| {
        config.state = StateLocation::Dir(dir.path().to_path_buf());
        config.allow_key_export = true;
    });
    assert_eq!(
        send(
            &socket,
            &format!("add-credential 1-1 {}", params(b"id", false, &pkcs8, 0))
        ),
        "ok added"
    );
    assert_eq!(credentials(&socket).len(), 1);
}

/// The binary: `--import FILE` at start, the `control` subcommand's verbs (JSON from @FILE).
#[test]
fn the_binary_imports_at_start_and_its_control_command_takes_json_files() {
    let dir = tempfile::tempdir().unwrap();
    let (signing, pkcs8) = test_key(6);
    let file = dir.path().join("credentials.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!([params(b"imported-at-start", false, &pkcs8, 41)]))
            .unwrap(),
    )
    .unwrap();
    let socket = dir.path().join("control.sock");
    let socket_arg = socket.to_str().unwrap();
    let file_arg = file.to_str().unwrap();

    // Without --ephemeral or --allow-key-export: refused, with the reason.
    let refused = Command::new(runner_binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--state",
            dir.path().to_str().unwrap(),
        ])
        .args(["--import", file_arg])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-key-export"));

    let key = Key::spawn(&[
        "--ephemeral",
        "--presence",
        "auto",
        "--control",
        socket_arg,
        "--import",
        file_arg,
    ]);
    let mut channel = key.channel();
    let (_, counter, _) = sign_in(
        &mut channel,
        &[b"imported-at-start"],
        signing.verifying_key(),
    );
    assert_eq!(counter, 42);

    let control = |args: &[&str]| {
        let out = Command::new(runner_binary())
            .args(["control", socket_arg])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let one = dir.path().join("one.json");
    std::fs::write(
        &one,
        serde_json::to_string_pretty(&params(b"from-a-file", true, &pkcs8, 0)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        control(&["add-credential", "1-1", &format!("@{}", one.display())]),
        (true, "ok added".to_string())
    );
    let (ok, listed) = control(&["credentials", "1-1"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Vec<Json>>(&listed).unwrap().len(), 2);
    let (ok, reply) = control(&["set-counter", "1-1", &encode_base64url(b"from-a-file"), "0"]);
    assert!(ok, "{reply}");
    let (ok, reply) = control(&["remove-credential", "1-1", "bm9ib2R5"]);
    assert!(
        !ok && reply.starts_with("error"),
        "an error exits 1: {reply}"
    );
    let help = Command::new(runner_binary())
        .args(["control", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for verb in [
        "credentials BUS",
        "add-credential BUS JSON",
        "remove-credential BUS ID",
        "clear-credentials BUS",
        "set-counter BUS ID N",
        "events [BUS]",
    ] {
        assert!(help.contains(verb), "control --help lists {verb}");
    }
}

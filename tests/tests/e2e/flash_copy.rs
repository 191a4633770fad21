//! Attacks on a copy of the virtual key's state (`state.lfs`), as a thief or a local user who
//! copied it would make them (`e2e_tests::flash_copy`): with the PIN lock on, the copy neither
//! signs for a credential registered before it nor gives up the PIN to a dictionary that lacks
//! it; given the real PIN it does both (so the test can fail); without the lock it signs at once
//! (that is what the lock is for). And a reset leaves no byte of the old key or of a user name.
//! A copy whose vault was spoiled is refused, not served as a blank key, until reset.

use e2e_tests::ctap::*;
use e2e_tests::flash_copy::{attack, Layout};
use e2e_tests::pin::PinClient;
use e2e_tests::Key;

const PIN: &str = "739164";
const RP: &str = "signin.aws.amazon.com";
const MARKER: &str = "REMANENCE-MARKER-USER-7f3a";
/// The PINs people pick most (none of them this key's).
const DICTIONARY: &[&str] = &[
    "123456", "000000", "111111", "123123", "654321", "121212", "112233", "666666", "123321",
    "password",
];

/// A key with a PIN and a credential of `RP` (made with a touch, as U2F-era sites do), the lock
/// on or off; returns the copy of its state, the credential ID and its COSE key.
fn registered_key(lock: bool) -> (Vec<u8>, Vec<u8>, ciborium::Value) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let key = Key::spawn(&["--presence", "auto", "--state", state]);
    let mut channel = key.channel();
    let request = make_credential_request(RP, b"alice", &[-7], false);
    let (status, body) = call(&mut channel, 0x01, Some(request));
    assert_eq!(status, 0);
    let data = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
    let client = PinClient::new(&mut channel, 2, 9);
    assert_eq!(client.set_pin(&mut channel, PIN), 0);
    drop(channel);
    if lock {
        // As an owner would, with the documented tool (docs/pin-lock.md), over USB/IP.
        let tool = e2e_tests::runner_binary().with_file_name("fido-pin-lock");
        assert!(
            tool.exists(),
            "{} is missing: cargo build -p fido-client",
            tool.display()
        );
        let mut child = std::process::Command::new(tool)
            .args([&format!("{}:1-1", key.addr()), "on"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{PIN}").unwrap();
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "fido-pin-lock: {said}");
        assert!(said.contains("the PIN lock is on"), "{said}");
    }
    assert!(key.terminate());
    let copy = std::fs::read(dir.path().join("state.lfs")).unwrap();
    (copy, data.credential_id, data.public_key.unwrap())
}

/// What a forged signature must verify as: authenticatorData and a clientDataHash the thief
/// chose.
fn forged_assertion_verifies(
    outcome: &e2e_tests::flash_copy::Outcome,
    id: &[u8],
    public_key: &ciborium::Value,
) -> bool {
    let auth_data = [&sha2_256(RP.as_bytes())[..], &[0x01], &[0, 0, 9, 9]].concat();
    let client_data_hash = [0x5a; 32];
    let Some(signature) = outcome.forge(RP, id, &[&auth_data, &client_data_hash]) else {
        return false;
    };
    verify(
        public_key,
        &[&auth_data[..], &client_data_hash].concat(),
        &signature,
    );
    true
}

fn sha2_256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

#[test]
fn a_copy_of_a_locked_key_gives_nothing_without_its_pin() {
    let (copy, id, public_key) = registered_key(true);
    let outcome = attack(&copy, Layout::VirtualKey, DICTIONARY);
    eprintln!(
        "locked copy, {} guesses: {} ({:?} per guess)",
        outcome.guesses,
        outcome.how,
        outcome.per_guess()
    );
    assert!(
        outcome.kwk.is_none(),
        "the key-wrapping key came out: {}",
        outcome.how
    );
    assert!(outcome.pin.is_none());
    assert_eq!(outcome.guesses, DICTIONARY.len(), "every guess paid for");
    assert!(!forged_assertion_verifies(&outcome, &id, &public_key));

    // Told the PIN, the same program opens the copy and signs: the attack is real.
    let with_pin: Vec<&str> = DICTIONARY.iter().copied().chain([PIN]).collect();
    let outcome = attack(&copy, Layout::VirtualKey, &with_pin);
    assert_eq!(outcome.pin.as_deref(), Some(PIN), "{}", outcome.how);
    assert!(forged_assertion_verifies(&outcome, &id, &public_key));
}

#[test]
fn without_the_lock_a_copy_signs_at_once() {
    let (copy, id, public_key) = registered_key(false);
    let outcome = attack(&copy, Layout::VirtualKey, &[]);
    eprintln!("unlocked copy: {}", outcome.how);
    assert!(outcome.kwk.is_some(), "no PIN needed: {}", outcome.how);
    assert!(forged_assertion_verifies(&outcome, &id, &public_key));
}

#[test]
fn after_reset_the_state_holds_no_byte_of_the_old_key_or_a_user_name() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let args = ["--presence", "auto", "--state", state];
    let key = Key::spawn(&args);
    let mut channel = key.channel();
    let Value::Map(mut request) = make_credential_request(RP, b"alice", &[-7], true) else {
        unreachable!()
    };
    request[2].1 = map(vec![
        (text("id"), bytes(b"alice")),
        (text("name"), text(MARKER)),
    ]);
    assert_eq!(call(&mut channel, 0x01, Some(Value::Map(request))).0, 0);
    let client = PinClient::new(&mut channel, 2, 9);
    assert_eq!(client.set_pin(&mut channel, PIN), 0);
    drop(channel);
    assert!(key.terminate());
    let path = dir.path().join("state.lfs");
    let before = std::fs::read(&path).unwrap();
    let kwk = attack(&before, Layout::VirtualKey, &[])
        .kwk
        .expect("no lock: in the clear");
    let count =
        |image: &[u8], needle: &[u8]| image.windows(needle.len()).filter(|w| *w == needle).count();
    assert!(count(&before, MARKER.as_bytes()) > 0 && count(&before, &kwk) > 0);

    // authenticatorReset within 10 s of start, with a touch.
    let key = Key::spawn(&args);
    let mut channel = key.channel();
    assert_eq!(call(&mut channel, 0x07, None).0, 0);
    drop(channel);
    assert!(key.terminate());
    let after = std::fs::read(&path).unwrap();
    assert_eq!(
        count(&after, MARKER.as_bytes()),
        0,
        "the user name survived the reset"
    );
    assert_eq!(
        count(&after, &kwk),
        0,
        "the old key-wrapping key survived the reset"
    );
    assert_eq!(
        count(&after, &sha2_256(PIN.as_bytes())[..16]),
        0,
        "the PIN's hash survived"
    );
}

/// Someone with the state file spoils the vault (both slots hold the key's record, each with a
/// byte changed), hoping for a key without a PIN over the owner's records. The key refuses
/// (CTAP2_ERR_VENDOR_FIRST, U2F 0x6F00) all but getInfo and reset, says so in the runner's log
/// with the state file and the fix, and a reset within 10 s of start gives a working key.
#[test]
fn a_spoiled_vault_is_refused_and_logged_until_reset() {
    const VAULT_UNREADABLE: u8 = 0xF0;
    const VAULT: usize = 4096 * 4096;
    const SLOT: usize = 8192;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let args = ["--presence", "auto", "--state", state];
    let key = Key::spawn(&args);
    let mut channel = key.channel();
    let Value::Map(mut request) = make_credential_request(RP, b"alice", &[-7], true) else {
        unreachable!()
    };
    request[2].1 = map(vec![
        (text("id"), bytes(b"alice")),
        (text("name"), text(MARKER)),
    ]);
    let (status, body) = call(&mut channel, 0x01, Some(Value::Map(request)));
    assert_eq!(status, 0);
    let id = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap()).credential_id;
    let client = PinClient::new(&mut channel, 2, 9);
    assert_eq!(client.set_pin(&mut channel, PIN), 0);
    drop(channel);
    assert!(key.terminate());

    let path = dir.path().join("state.lfs");
    let mut image = std::fs::read(&path).unwrap();
    let vault = &mut image[VAULT..VAULT + 2 * SLOT];
    let slot = vault
        .chunks(SLOT)
        .position(|s| s.starts_with(b"OFKVAULT"))
        .unwrap();
    vault[slot * SLOT + 40] ^= 1;
    vault.copy_within(slot * SLOT..(slot + 1) * SLOT, (1 - slot) * SLOT);
    vault[(1 - slot) * SLOT + 41] ^= 1;
    std::fs::write(&path, &image).unwrap();

    let log_path = dir.path().join("runner.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let key = Key::spawn_logging(&args, &[], "warn", log);
    let mut channel = key.channel();
    let (status, info) = call(&mut channel, 0x04, None);
    assert_eq!(status, 0, "getInfo answers");
    let mut encoded = Vec::new();
    ciborium::into_writer(&info.unwrap(), &mut encoded).unwrap();
    assert!(!encoded
        .windows(MARKER.len())
        .any(|w| w == MARKER.as_bytes()));
    let cdh = [9u8; 32];
    for allow in [&[&id[..]][..], &[]] {
        let request = get_assertion_request(RP, &cdh, allow);
        assert_eq!(
            call(&mut channel, 0x02, Some(request)).0,
            VAULT_UNREADABLE,
            "the owner's credential fails with the refusal, not 'no credentials'"
        );
    }
    let key_agreement = map(vec![(int(1), int(2)), (int(2), int(2))]);
    assert_eq!(
        call(&mut channel, 0x06, Some(key_agreement)).0,
        VAULT_UNREADABLE,
        "no PIN protocol, so no new PIN"
    );
    let enumerate_rps = map(vec![(int(1), int(2))]);
    assert_eq!(
        call(&mut channel, 0x0A, Some(enumerate_rps)).0,
        VAULT_UNREADABLE
    );
    let (_, sw) = channel.msg(&[0, 3, 0, 0]).unwrap();
    assert_eq!(sw, 0x6F00, "U2F VERSION");
    drop(channel);
    assert!(key.terminate());
    let said = std::fs::read_to_string(&log_path).unwrap();
    eprintln!("{said}");
    assert!(
        said.contains("vault") && said.contains(path.to_str().unwrap()) && said.contains("reset"),
        "the log names the state file and the way out: {said}"
    );

    // authenticatorReset within 10 s of start, with a touch: a working key again.
    let key = Key::spawn(&args);
    let mut channel = key.channel();
    assert_eq!(call(&mut channel, 0x07, None).0, 0);
    let request = get_assertion_request(RP, &cdh, &[&id[..]]);
    assert_eq!(call(&mut channel, 0x02, Some(request)).0, 0x2E, "forgotten");
    let request = make_credential_request(RP, b"carol", &[-7], true);
    let (status, body) = call(&mut channel, 0x01, Some(request));
    assert_eq!(status, 0);
    let data = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
    let request = get_assertion_request(RP, &cdh, &[&data.credential_id[..]]);
    let (status, body) = call(&mut channel, 0x02, Some(request));
    assert_eq!(status, 0);
    let body = body.unwrap();
    let signed = [get(&body, 2).unwrap().as_bytes().unwrap(), &cdh[..]].concat();
    verify(
        &data.public_key.unwrap(),
        &signed,
        get(&body, 3).unwrap().as_bytes().unwrap(),
    );
    drop(channel);
    assert!(key.terminate());
}

use ciborium::Value;

//! A PIN guess is paid for on storage before it is checked: a power cut between the retry
//! decrement and the answer leaves the retry spent.

use e2e_tests::ctaphid::Channel;
use e2e_tests::pin::{retries, PinClient};
use e2e_tests::Key;

const PIN: &str = "1234";

/// getPinToken without `Channel::cbor`'s expectation of an answer: a dead key gives none.
fn try_token(channel: &mut Channel, client: &PinClient, pin: &str) -> bool {
    use e2e_tests::ctap::*;
    let body = map(vec![
        (int(1), int(2)),
        (int(2), int(5)),
        (int(3), client.platform_key()),
        (int(6), bytes(&client.pin_hash_enc(pin))),
    ]);
    matches!(channel.cbor(&request(0x06, Some(&body))), Ok((0, _)))
}

#[test]
fn a_power_cut_after_the_retry_decrement_keeps_the_retry_spent() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let args = ["--presence", "auto", "--state", state];

    let key = Key::spawn(&args);
    let mut channel = key.channel();
    let client = PinClient::new(&mut channel, 2, 7);
    assert_eq!(client.set_pin(&mut channel, PIN), 0);
    assert_eq!(retries(&mut channel).0, 8);
    drop(channel);
    assert!(key.terminate());

    // The first storage write after start-up is this PIN check's retry decrement; the power is
    // cut right after it, before the PIN is compared. Even the right PIN pays.
    for (spent, pin) in [(1, PIN), (2, "0000")] {
        let key = Key::spawn_with_env(&args, &[("USBIP_RUNNER_FAULT_AFTER_WRITES", "1")]);
        let mut channel = key.channel();
        let client = PinClient::new(&mut channel, 2, 7);
        assert!(
            !try_token(&mut channel, &client, pin),
            "no answer: the key lost power"
        );
        drop(channel);
        assert!(key.wait_crash(), "the runner died at the write");

        let key = Key::spawn(&args);
        let mut channel = key.channel();
        assert_eq!(retries(&mut channel).0, 8 - spent, "the retry stays spent");
        drop(channel);
        assert!(key.terminate());
    }
    // The right PIN, uninterrupted, restores the count.
    let key = Key::spawn(&args);
    let mut channel = key.channel();
    let client = PinClient::new(&mut channel, 2, 7);
    assert!(try_token(&mut channel, &client, PIN));
    assert_eq!(retries(&mut channel).0, 8);
}

//! The credential store at scale, over USB/IP as users run the virtual key (`--state DIR`, an
//! fsync'd file): maximal discoverable credentials (RP ID 256 bytes, user id 64, name and
//! displayName 64, credBlob 32), all on one RP or spread over 100, and at each count the
//! round trips that must not grow with it. Prints figures; asserts nothing about speed (it
//! does check that the remaining count falls by exactly one per creation).
//!
//! `cargo bench -p e2e-tests --bench store_scale`; STORE_BENCH_COUNTS=10,100,1000,4000 (the
//! default) sets the counts.

use std::time::{Duration, Instant};

use ciborium::Value;
use e2e_tests::ctap::*;
use e2e_tests::ctaphid::{self, Channel};
use e2e_tests::pin::PinClient;
use e2e_tests::Key;
use sha2::{Digest, Sha256};
use usbip_runner::{PresenceMode, StateLocation};

const PIN: &str = "246810";

fn rp_id(n: usize) -> String {
    let tail = format!(".rp{n}.example");
    "r".repeat(256 - tail.len()) + &tail
}

fn padded(prefix: &str, len: usize, fill: char) -> String {
    let mut s = prefix.to_string();
    while s.len() < len {
        s.push(fill);
    }
    s
}

/// makeCredential of a maximal discoverable credential, under a fresh pinUvAuthToken.
fn make_maximal(channel: &mut Channel, client: &PinClient, rp: &str, user: usize) -> (u8, Vec<u8>) {
    let token = client
        .token(channel, PIN, Some(0x01), Some(rp))
        .expect("a token for makeCredential");
    let name = padded(&format!("name-{user}-"), 64, 'n');
    let body = map(vec![
        (int(1), bytes(&[7u8; 32])),
        (int(2), map(vec![(text("id"), text(rp))])),
        (
            int(3),
            map(vec![
                (
                    text("id"),
                    bytes(padded(&format!("user-{user}-"), 64, 'u').as_bytes()),
                ),
                (text("name"), text(&name)),
                (text("displayName"), text(&name)),
            ]),
        ),
        (
            int(4),
            Value::Array(vec![map(vec![
                (text("alg"), int(-7)),
                (text("type"), text("public-key")),
            ])]),
        ),
        (int(6), map(vec![(text("credBlob"), bytes(&[0xAB; 32]))])),
        (int(7), map(vec![(text("rk"), Value::Bool(true))])),
        (int(8), bytes(&PinClient::mac(2, &token, &[7u8; 32]))),
        (int(9), int(2)),
    ]);
    let request = request(0x01, Some(&body));
    let start = Instant::now();
    let (status, response) = channel.cbor(&request).unwrap();
    let elapsed = start.elapsed();
    let id = decode_body(&response)
        .filter(|_| status == 0)
        .map(|b| parse_auth_data(get(&b, 2).unwrap().as_bytes().unwrap()).credential_id)
        .unwrap_or_default();
    ELAPSED.with(|e| e.set(elapsed));
    (status, id)
}

thread_local! {
    static ELAPSED: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

fn remaining(channel: &mut Channel) -> i64 {
    let (status, body) = channel.cbor(&[0x04]).unwrap();
    assert_eq!(status, 0);
    as_int(get(&decode_body(&body).unwrap(), 0x14).unwrap())
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// Credential management over all of `rp`'s credentials: begin, then get-next for the rest.
fn enumerate(
    channel: &mut Channel,
    client: &PinClient,
    rp: &str,
    expected: usize,
) -> (Duration, usize) {
    let token = client.token(channel, PIN, Some(0x04), None).unwrap();
    let rp_hash: [u8; 32] = Sha256::digest(rp.as_bytes()).into();
    let params = map(vec![(int(1), bytes(&rp_hash))]);
    let mut message = vec![4u8];
    ciborium::into_writer(&params, &mut message).unwrap();
    let begin = request(
        0x0A,
        Some(&map(vec![
            (int(1), int(4)),
            (int(2), params),
            (int(3), int(2)),
            (int(4), bytes(&PinClient::mac(2, &token, &message))),
        ])),
    );
    let next = request(0x0A, Some(&map(vec![(int(1), int(5))])));
    let mut answer = 0;
    let elapsed = timed(|| {
        let (status, body) = channel.cbor(&begin).unwrap();
        assert_eq!(status, 0);
        answer = body.len();
        let total = as_int(get(&decode_body(&body).unwrap(), 9).unwrap()) as usize;
        assert_eq!(total, expected, "totalCredentials");
        for _ in 1..total {
            assert_eq!(channel.cbor(&next).unwrap().0, 0);
        }
    });
    (elapsed, answer)
}

/// The transport alone: a PING as long as one enumeration answer, echoed (median).
fn ping(channel: &mut Channel, length: usize) -> f64 {
    let data = vec![0x5a; length + 1];
    median(
        (0..20)
            .map(|_| timed(|| assert_eq!(channel.transact(ctaphid::PING, &data).unwrap().1, data)))
            .collect(),
    )
}

fn creds_metadata(channel: &mut Channel, client: &PinClient) -> (Duration, i64) {
    let token = client.token(channel, PIN, Some(0x04), None).unwrap();
    let body = request(
        0x0A,
        Some(&map(vec![
            (int(1), int(1)),
            (int(3), int(2)),
            (int(4), bytes(&PinClient::mac(2, &token, &[1]))),
        ])),
    );
    let mut existing = 0;
    let elapsed = timed(|| {
        let (status, response) = channel.cbor(&body).unwrap();
        assert_eq!(status, 0);
        existing = as_int(get(&decode_body(&response).unwrap(), 1).unwrap());
    });
    (elapsed, existing)
}

/// Fill a key to each count (credentials on `rps` RPs, RP 0 getting its share) and measure.
fn scenario(label: &str, rps: usize, counts: &[usize]) {
    let dir = std::env::temp_dir().join(format!("store-scale-{}-{rps}", std::process::id()));
    let key = Key::start_with(PresenceMode::Auto, StateLocation::Dir(dir.clone()));
    let mut channel = key.channel();
    let client = PinClient::new(&mut channel, 2, 1);
    assert_eq!(client.set_pin(&mut channel, PIN), 0);
    println!("-- {label}");
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10} {:>8}   (ms; medians but enumeration)",
        "stored", "makeCred", "getAssert", "discovery", "getNext", "enumerate", "metadata", "PING"
    );
    let mut stored = 0;
    let mut first_id = Vec::new();
    let fill_start = Instant::now();
    for &count in counts {
        while stored < count {
            let before = remaining(&mut channel);
            let (status, id) = make_maximal(&mut channel, &client, &rp_id(stored % rps), stored);
            assert_eq!(status, 0, "credential {stored}");
            if stored == 0 {
                first_id = id;
            }
            stored += 1;
            assert_eq!(
                remaining(&mut channel),
                before - 1,
                "exactly one place each"
            );
        }
        // makeCredential(rk): ten more, timed alone (the token is fetched before).
        let mut make = Vec::new();
        for _ in 0..10 {
            let (status, _) = make_maximal(&mut channel, &client, &rp_id(stored % rps), stored);
            assert_eq!(status, 0);
            stored += 1;
            make.push(ELAPSED.with(|e| e.get()));
        }
        let rp0 = rp_id(0);
        let on_rp0 = stored.div_ceil(rps);
        let allow = request(
            0x02,
            Some(&get_assertion_request(&rp0, &[1; 32], &[&first_id])),
        );
        let discover = request(0x02, Some(&get_assertion_request(&rp0, &[2; 32], &[])));
        let assert: Vec<_> = (0..20)
            .map(|_| timed(|| assert_eq!(channel.cbor(&allow).unwrap().0, 0)))
            .collect();
        let mut next = Vec::new();
        let discovery: Vec<_> = (0..10)
            .map(|_| {
                let elapsed = timed(|| {
                    let (status, body) = channel.cbor(&discover).unwrap();
                    assert_eq!(status, 0);
                    let n = get(&decode_body(&body).unwrap(), 5).map_or(1, as_int);
                    assert_eq!(n as usize, on_rp0, "numberOfCredentials");
                });
                for _ in 0..on_rp0.saturating_sub(1).min(5) {
                    next.push(timed(|| assert_eq!(channel.cbor(&[0x08]).unwrap().0, 0)));
                }
                elapsed
            })
            .collect();
        let (enumeration, answer) = enumerate(&mut channel, &client, &rp0, on_rp0);
        let transport = ping(&mut channel, answer);
        let (metadata, existing) = creds_metadata(&mut channel, &client);
        assert_eq!(existing as usize, stored);
        println!(
            "{stored:>6} {:>10.2} {:>10.2} {:>10.2} {:>10} {:>12.1} {:>10.2} {:>8.2}   ({on_rp0} on the RP enumerated)",
            median(make),
            median(assert),
            median(discovery),
            if next.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2}", median(next))
            },
            enumeration.as_secs_f64() * 1e3,
            metadata.as_secs_f64() * 1e3,
            transport,
        );
    }
    println!(
        "filled {stored} through USB/IP in {:.1} s (a fresh token, a makeCredential and a getInfo each)",
        fill_start.elapsed().as_secs_f64()
    );
    drop(channel);
    drop(key);
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this once, briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let counts: Vec<usize> = std::env::var("STORE_BENCH_COUNTS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if quick {
                vec![10, 30]
            } else {
                vec![10, 100, 1000, 4000]
            }
        });
    scenario("maximal credentials, one RP", 1, &counts);
    scenario("maximal credentials spread over 100 RPs", 100, &counts);
}

//! Round trips of CTAP commands over USB/IP on loopback, through the strict Rust client:
//! CTAPHID framing, interrupt URBs, the USB stack, the authenticator. Prints figures; asserts
//! nothing about speed.
//!
//! `cargo bench -p e2e-tests --bench roundtrip` (set ROUNDTRIP_ITERATIONS to change the count).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e_tests::ctap::*;
use e2e_tests::ctaphid::{self, Channel};
use e2e_tests::Key;
use usbip_runner::{PresenceMode, ServerConfig, StateLocation};

fn measure(iterations: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..iterations / 10 {
        f(); // warm up
    }
    let mut samples: Vec<Duration> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort();
    samples
}

fn report(name: &str, samples: &[Duration]) {
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<34} median {:>8.3} ms   p90 {:>8.3} ms   min {:>8.3} ms   (n={})",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples.len()
    );
}

fn bench(label: &str, state: StateLocation, iterations: usize) {
    let key = Key::start_with(PresenceMode::Auto, state);
    let mut channel: Channel = key.channel();
    let make = request(
        0x01,
        Some(&make_credential_request(
            "example.com",
            b"bench",
            &[-7],
            false,
        )),
    );
    let (status, body) = channel.cbor(&make).unwrap();
    assert_eq!(status, 0);
    let id = parse_auth_data(
        get(&decode_body(&body).unwrap(), 2)
            .unwrap()
            .as_bytes()
            .unwrap(),
    )
    .credential_id;
    let get_assertion = request(
        0x02,
        Some(&get_assertion_request("example.com", &[1; 32], &[&id])),
    );

    println!("-- {label}");
    report(
        "PING (57 bytes)",
        &measure(iterations, || {
            channel.transact(ctaphid::PING, &[0x5a; 57]).unwrap();
        }),
    );
    report(
        "getInfo",
        &measure(iterations, || {
            assert_eq!(channel.cbor(&[0x04]).unwrap().0, 0);
        }),
    );
    report(
        "getAssertion (ES256)",
        &measure(iterations, || {
            assert_eq!(channel.cbor(&get_assertion).unwrap().0, 0);
        }),
    );
    report(
        "makeCredential (ES256)",
        &measure(iterations / 2, || {
            assert_eq!(channel.cbor(&make).unwrap().0, 0);
        }),
    );
}

/// Hundreds of accounts of one RP: how long listing them takes, through credential management
/// and through a getAssertion series.
fn bench_enumeration(users: usize) {
    use e2e_tests::pin::PinClient;
    use sha2::{Digest, Sha256};
    let key = Key::start(PresenceMode::Auto);
    let mut channel: Channel = key.channel();
    let client = PinClient::new(&mut channel, 2, 1);
    assert_eq!(client.set_pin(&mut channel, "123456"), 0);
    for i in 0..users {
        let token = client
            .token(&mut channel, "123456", Some(0x01), None)
            .unwrap();
        let mut body = make_credential_request(
            "aws.amazon.com",
            format!("user-{i:04}").as_bytes(),
            &[-7],
            true,
        );
        if let ciborium::Value::Map(entries) = &mut body {
            entries.push((int(8), bytes(&PinClient::mac(2, &token, &[7u8; 32]))));
            entries.push((int(9), int(2)));
        }
        assert_eq!(channel.cbor(&request(0x01, Some(&body))).unwrap().0, 0);
    }
    let token = client
        .token(&mut channel, "123456", Some(0x04 | 0x02), None)
        .unwrap();
    let rp_hash: [u8; 32] = Sha256::digest(b"aws.amazon.com").into();
    let params = map(vec![(int(1), bytes(&rp_hash))]);
    let mut message = vec![4u8];
    ciborium::into_writer(&params, &mut message).unwrap();
    let begin = map(vec![
        (int(1), int(4)),
        (int(2), params),
        (int(3), int(2)),
        (int(4), bytes(&PinClient::mac(2, &token, &message))),
    ]);
    let start = Instant::now();
    assert_eq!(channel.cbor(&request(0x0A, Some(&begin))).unwrap().0, 0);
    for _ in 1..users {
        assert_eq!(
            channel
                .cbor(&request(0x0A, Some(&map(vec![(int(1), int(5))]))))
                .unwrap()
                .0,
            0
        );
    }
    let enumerate = start.elapsed();
    let start = Instant::now();
    assert_eq!(
        channel
            .cbor(&request(
                0x02,
                Some(&get_assertion_request("aws.amazon.com", &[1; 32], &[]))
            ))
            .unwrap()
            .0,
        0
    );
    for _ in 1..users {
        assert_eq!(channel.cbor(&[0x08]).unwrap().0, 0);
    }
    let series = start.elapsed();
    println!("-- {users} discoverable credentials of one RP");
    println!(
        "{:<34} total {:>8.1} ms",
        "credential management enumeration",
        enumerate.as_secs_f64() * 1e3
    );
    println!(
        "{:<34} total {:>8.1} ms",
        "getAssertion + getNextAssertion",
        series.as_secs_f64() * 1e3
    );
}

/// A new USB/IP connection and its device list, as each `usbip list` and `usbip attach` starts:
/// with the peer's uid looked up first (sock_diag, the default), and with every peer served (no
/// look-up). The difference is what the owner check costs a connection.
fn bench_connection(iterations: usize) {
    println!("-- a new USB/IP connection: connect, OP_REQ_DEVLIST, the list");
    for (label, anyone) in [
        ("devlist, the peer's uid checked", false),
        ("devlist, every peer served", true),
    ] {
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            PresenceMode::Auto,
            StateLocation::Ephemeral,
        );
        config.allow_other_users = anyone;
        config.listen_remote = anyone;
        let key = Key::start_config(config);
        let samples = measure(iterations, || {
            let mut stream = TcpStream::connect(key.addr()).unwrap();
            stream
                .write_all(&[0x01, 0x11, 0x80, 0x05, 0, 0, 0, 0])
                .unwrap();
            let mut header = [0u8; 12];
            stream.read_exact(&mut header).unwrap();
            assert_eq!(header[4..8], [0, 0, 0, 0], "the list is not refused");
            // One device: its record, then its one interface.
            let mut device = [0u8; 312 + 4];
            stream.read_exact(&mut device).unwrap();
        });
        report(label, &samples);
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this once, briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let iterations = std::env::var("ROUNDTRIP_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if quick { 10 } else { 500 });
    let dir = std::env::temp_dir().join(format!("roundtrip-{}", std::process::id()));
    bench(
        "usbip-runner --ephemeral",
        StateLocation::Ephemeral,
        iterations,
    );
    bench(
        "usbip-runner --state DIR (fsync'd file)",
        StateLocation::Dir(dir.clone()),
        iterations,
    );
    let _ = std::fs::remove_dir_all(dir);
    bench_enumeration(if quick { 5 } else { 300 });
    bench_connection(iterations);
}

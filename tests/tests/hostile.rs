//! Hostile and heavy USB/IP clients: connection storms, a client that stops reading, and a
//! bounded load test over several keys. The server keeps serving throughout.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e_tests::ctap::*;
use e2e_tests::ctaphid::{self, Channel};
use e2e_tests::usbip::{self, Device};
use e2e_tests::Key;
use usbip_runner::{PresenceMode, ServerConfig, StateLocation};

fn import_when_free(key: &Key, bus: &str) -> Device {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Device::import(key.addr(), bus) {
            Ok(device) => return device,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => panic!("{bus} never became importable: {error}"),
        }
    }
}

#[test]
fn a_thousand_connections_come_and_go() {
    let key = Key::start(PresenceMode::Auto);
    for i in 0..1000 {
        let mut stream = TcpStream::connect(key.addr()).unwrap();
        if i % 3 == 0 {
            let _ = stream.write_all(&[0x01, 0x11, 0x80]); // and vanish mid-header
        }
    }
    for _ in 0..20 {
        assert_eq!(usbip::list(key.addr()).unwrap().len(), 1);
    }
    let mut channel = Channel::open(import_when_free(&key, "1-1")).unwrap();
    assert_eq!(
        channel.transact(ctaphid::PING, b"still here").unwrap().1,
        b"still here"
    );
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_the_key_serves_the_next() {
    let key = Key::start(PresenceMode::Auto);
    let mut device = Device::import(key.addr(), "1-1").unwrap();
    let (ep_in, ep_out) = (device.ep_in, device.ep_out);
    // Flood: long PINGs on a channel, and IN URBs to carry the answers, never reading any reply.
    let init = ctaphid::packets(ctaphid::BROADCAST, ctaphid::INIT, &[1; 8]).remove(0);
    device.submit(ep_out, 0, [0; 8], &init, 64).unwrap();
    let ping = ctaphid::packets(1, ctaphid::PING, &[0x55; 7609]);
    let started = Instant::now();
    'flood: for _ in 0..40 {
        for packet in &ping {
            if device.submit(ep_out, 0, [0; 8], packet, 64).is_err()
                || device.submit(ep_in, 1, [0; 8], &[], 64).is_err()
            {
                break 'flood;
            }
            if started.elapsed() > Duration::from_secs(8) {
                break 'flood;
            }
        }
    }
    // Whatever it did, the next client gets the key once the first is gone or dropped.
    drop(device);
    let mut channel = Channel::open(import_when_free(&key, "1-1")).unwrap();
    assert_eq!(channel.transact(ctaphid::PING, b"next").unwrap().1, b"next");
}

#[test]
fn bounded_load_on_three_keys() {
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        PresenceMode::Auto,
        StateLocation::Ephemeral,
    );
    config.keys = 3;
    let key = Key::start_config(config);
    let duration = Duration::from_secs(3);
    let results: Vec<(usize, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["1-1", "1-2", "1-3"]
            .iter()
            .map(|bus| {
                let key = &key;
                scope.spawn(move || {
                    let mut channel = Channel::open(key.attach_bus(bus)).unwrap();
                    let (status, body) = channel
                        .cbor(&request(
                            0x01,
                            Some(&make_credential_request("load.example", b"u", &[-7], false)),
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
                        Some(&get_assertion_request("load.example", &[1; 32], &[&id])),
                    );
                    let (mut ok, mut errors) = (0, 0);
                    let start = Instant::now();
                    while start.elapsed() < duration {
                        match channel.cbor(&assertion) {
                            Ok((0, _)) => ok += 1,
                            _ => errors += 1,
                        }
                    }
                    (ok, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: usize = results.iter().map(|r| r.0).sum();
    let errors: usize = results.iter().map(|r| r.1).sum();
    println!(
        "load: 3 keys, 3 clients, {duration:?}: {ok} getAssertions ({:.0}/s), {errors} errors",
        ok as f64 / duration.as_secs_f64()
    );
    assert_eq!(errors, 0);
    assert!(ok > 0);
}

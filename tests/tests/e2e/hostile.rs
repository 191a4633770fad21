//! Hostile and heavy USB/IP clients: connection storms, a client that stops reading, and a
//! bounded load test over several keys. The server keeps serving throughout.

use std::io::{Read, Write};
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
    // The storm's connections may still hold some of the --max-connections places for a
    // moment (their threads end when they read the EOF); then the key lists and serves again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while usbip::list(key.addr()).is_err() {
        assert!(Instant::now() < deadline, "the key never served again");
        std::thread::sleep(Duration::from_millis(20));
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

/// A process's memory from /proc/PID/status, in KiB: resident now, resident at its peak, and
/// the peak of its address space (which an allocation shows even before it is touched).
#[derive(Clone, Copy, Debug)]
struct Memory {
    rss: u64,
    hwm: u64,
    peak_virtual: u64,
}

fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
        peak_virtual: field("VmPeak:"),
    }
}

/// A raw imported connection that the test writes to and never reads: OP_REQ_IMPORT (its
/// reply read), then SET_CONFIGURATION, as the kernel starts.
fn raw_import(key: &Key) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut stream = TcpStream::connect(key.addr()).unwrap();
        let mut request = vec![0x01, 0x11, 0x80, 0x03, 0, 0, 0, 0];
        let mut bus = [0u8; 32];
        bus[..3].copy_from_slice(b"1-1");
        request.extend_from_slice(&bus);
        stream.write_all(&request).unwrap();
        let mut reply = [0u8; 8 + 312];
        stream.read_exact(&mut reply[..8]).unwrap();
        if reply[4..8] == [0; 4] {
            stream.read_exact(&mut reply[8..]).unwrap();
            let set_configuration = [0u8, 9, 1, 0, 0, 0, 0, 0];
            stream
                .write_all(&submit_pdu(1, 0, 0, 0, &set_configuration, &[]))
                .unwrap();
            return stream;
        }
        assert!(Instant::now() < deadline, "1-1 never became importable");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CMD_SUBMIT with a declared length and the data that follows (OUT).
fn submit_pdu(
    seqnum: u32,
    direction: u32,
    endpoint: u32,
    length: u32,
    setup: &[u8; 8],
    data: &[u8],
) -> Vec<u8> {
    let mut pdu = Vec::with_capacity(48 + data.len());
    for value in [
        1u32,
        seqnum,
        0x0001_0002,
        direction,
        endpoint,
        0,
        length,
        0,
        0,
        0,
    ] {
        pdu.extend_from_slice(&value.to_be_bytes());
    }
    pdu.extend_from_slice(setup);
    pdu.extend_from_slice(data);
    pdu
}

/// The key's memory stays bounded whatever its clients do: thousands of connections, hundreds
/// held open at once, an attached client that floods URBs and never reads a reply, and a URB
/// that declares 4 GiB. The runner is a process of its own, so /proc shows its figures alone.
#[test]
fn memory_stays_bounded_under_hostile_clients() {
    const MIB: u64 = 1024;
    let key = Key::spawn(&["--ephemeral", "--presence", "auto"]);
    let pid = key.pid().unwrap();
    let serves = |what: &str| {
        let mut channel = Channel::open(import_when_free(&key, "1-1")).unwrap();
        assert_eq!(
            channel.transact(ctaphid::PING, what.as_bytes()).unwrap().1,
            what.as_bytes()
        );
    };
    serves("warm up");
    let (ep_in, ep_out) = {
        let device = import_when_free(&key, "1-1");
        (u32::from(device.ep_in), u32::from(device.ep_out))
    };
    let base = memory(pid);
    println!(
        "memory: baseline VmRSS {} KiB, VmHWM {} KiB, VmPeak {} KiB",
        base.rss, base.hwm, base.peak_virtual
    );
    let check = |phase: &str, bound_mib: u64| {
        let now = memory(pid);
        println!(
            "memory: after {phase}: VmRSS {} KiB (+{}), VmHWM {} KiB (+{}), VmPeak {} KiB",
            now.rss,
            now.rss.saturating_sub(base.rss),
            now.hwm,
            now.hwm.saturating_sub(base.hwm),
            now.peak_virtual
        );
        assert!(
            now.hwm < base.hwm + bound_mib * MIB,
            "{phase}: peak resident memory grew by {} KiB",
            now.hwm - base.hwm
        );
    };

    // 3000 connections, one after the other; every third vanishes mid-header.
    for i in 0..3000 {
        let mut stream = TcpStream::connect(key.addr()).unwrap();
        if i % 3 == 0 {
            let _ = stream.write_all(&[0x01, 0x11, 0x80]);
        }
    }
    serves("after 3000 connections");
    check("3000 connections", 32);

    // 300 connections open at once, idle before import, then all gone.
    let open: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut stream = TcpStream::connect(key.addr()).unwrap();
            let _ = stream.write_all(&[0x01, 0x11]);
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    check("300 connections held open", 32);
    drop(open);
    serves("after 300 open connections");

    // Attached clients that flood and never read a reply: 100 MiB offered in at most 10 s
    // each, as OUT URBs of one report (INIT, whose answers need the IN URBs sent alongside, so
    // replies pile up unread) or of 64 KiB (the largest a URB may carry).
    let init = ctaphid::packets(ctaphid::BROADCAST, ctaphid::INIT, &[1; 8]).remove(0);
    for size in [64, 64 * 1024] {
        let mut stream = raw_import(&key);
        stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let data: Vec<u8> = init.iter().copied().cycle().take(size).collect();
        let started = Instant::now();
        let mut offered = 0usize;
        let mut seqnum = 2;
        while offered < 100 << 20 && started.elapsed() < Duration::from_secs(10) {
            let out = submit_pdu(seqnum, 0, ep_out, data.len() as u32, &[0; 8], &data);
            let inn = submit_pdu(seqnum + 1, 1, ep_in, 64, &[0; 8], &[]);
            seqnum += 2;
            if stream.write_all(&out).is_err() || stream.write_all(&inn).is_err() {
                break;
            }
            offered += out.len() + inn.len();
        }
        println!(
            "memory: flood of {size}-byte URBs: {} KiB offered in {:?} before the key stopped taking them",
            offered / 1024,
            started.elapsed()
        );
        check(&format!("a flood of {size}-byte URBs, never read"), 32);
        drop(stream);
        serves("after the flood");
        check("the flood's end", 32);
    }

    // A URB that declares 4 GiB of OUT data: refused before any allocation.
    let before = memory(pid);
    let mut stream = raw_import(&key);
    let _ = stream.write_all(&submit_pdu(2, 0, ep_out, u32::MAX, &[0; 8], &[0; 64]));
    let _ = stream.write_all(&submit_pdu(3, 0, ep_out, 0x8000_0000, &[0; 8], &[0; 64]));
    drop(stream);
    serves("after a 4 GiB URB");
    let after = memory(pid);
    println!(
        "memory: 4 GiB URB: VmPeak {} -> {} KiB",
        before.peak_virtual, after.peak_virtual
    );
    assert!(
        after.peak_virtual < before.peak_virtual + 1024 * MIB,
        "a declared length was allocated"
    );
    check("a 4 GiB URB", 32);
    assert!(key.terminate(), "the runner exits cleanly");
}

/// Past `max_connections` open at once, a new connection is closed as it arrives (each served
/// connection costs a thread), and the key serves again once clients go away.
#[test]
fn connections_past_the_cap_are_refused() {
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        PresenceMode::Auto,
        StateLocation::Ephemeral,
    );
    config.max_connections = 4;
    let key = Key::start_config(config);
    let open: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = TcpStream::connect(key.addr()).unwrap();
            stream.write_all(&[0x01, 0x11]).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut refused = TcpStream::connect(key.addr()).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    let closed = match refused.read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    assert!(closed, "the fifth connection is closed at once");
    assert!(
        usbip::list(key.addr()).is_err(),
        "no device list past the cap"
    );
    drop(open);
    let device = import_when_free(&key, "1-1");
    assert_ne!(device.ep_in, 0, "the key serves again below the cap");
}

/// Each attached key holds a connection, so a cap that leaves no room beyond the keys (no
/// `usbip list`, no second attach once all are attached) is refused at start.
#[test]
fn a_cap_with_no_room_beyond_the_keys_is_refused() {
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        PresenceMode::Auto,
        StateLocation::Ephemeral,
    );
    config.keys = 4;
    config.max_connections = 4;
    let error = usbip_runner::start(config.clone()).err().expect("refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    config.max_connections = 5;
    usbip_runner::start(config)
        .expect("room for one more")
        .shutdown();
}

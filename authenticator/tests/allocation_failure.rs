//! A full heap on every request path. On the Pico a failed allocation would stop the key until
//! it is unplugged, so the core makes every allocation of a request fallibly (`fallible`).
//! Here a counting allocator fails the 1st, then the 2nd, ... allocation a request makes,
//! each time on a freshly set-up key, until the request runs without reaching the failure:
//! - the key answers every time: an error (CTAPHID ERR_OTHER, CTAP1_ERR_OTHER, or U2F's
//!   0x6A84), or success where the failed allocation had a fallback; an infallible allocation
//!   anywhere would abort this test binary instead;
//! - afterwards, with the heap back, the same key still works, and the request left no trace:
//!   PIN retries unchanged, no credential stored by a failed makeCredential.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use authenticator::ctaphid::{Ctaphid, DeviceVersion, Packet, PACKET_SIZE};
use authenticator::Authenticator;
use ciborium::Value;
use sha2::{Digest, Sha256};
use test_support::pin_client::PinClient;
use test_support::*;

// ---------------------------------------------------------------------------------------------
// The allocator

thread_local! {
    /// Allocations counted since `arm`, and the one to fail (0: none armed).
    static COUNT: Cell<usize> = const { Cell::new(0) };
    static FAIL_AT: Cell<usize> = const { Cell::new(0) };
}

struct FailingAllocator;

impl FailingAllocator {
    /// Whether this allocation is the one to fail. Thread-local, so tests running in
    /// parallel do not disturb each other; the cells are const-initialised and need no heap.
    fn fails() -> bool {
        FAIL_AT.with(|fail_at| {
            let target = fail_at.get();
            if target == 0 {
                return false;
            }
            let n = COUNT.with(|count| {
                count.set(count.get() + 1);
                count.get()
            });
            n == target
        })
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator, except that one chosen
// call returns null, which GlobalAlloc allows for any allocation that cannot be satisfied.
unsafe impl GlobalAlloc for FailingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::fails() {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout is passed on as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::fails() {
            return std::ptr::null_mut();
        }
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::fails() {
            return std::ptr::null_mut();
        }
        // SAFETY: ptr, layout and new_size come from the caller, who upholds realloc's rules.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System with this layout (alloc above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: FailingAllocator = FailingAllocator;

/// Run `f` with the `n`th allocation failing; returns f's result and whether it got that far.
fn failing_at<R>(n: usize, f: impl FnOnce() -> R) -> (R, bool) {
    COUNT.with(|count| count.set(0));
    FAIL_AT.with(|fail_at| fail_at.set(n));
    let result = f();
    FAIL_AT.with(|fail_at| fail_at.set(0));
    (result, COUNT.with(Cell::get) >= n)
}

// ---------------------------------------------------------------------------------------------
// A host on CTAPHID, framing in the test (outside the failing window)

const CBOR: u8 = 0x90;
const MSG: u8 = 0x83;
const PING: u8 = 0x81;
const ERROR: u8 = 0xBF;
const ERR_OTHER: u8 = 0x7F;

type Key<'a> = Authenticator<'a, TestPlatform>;

thread_local! {
    /// The channel INIT gave the test's host.
    static CHANNEL: Cell<u32> = const { Cell::new(0) };
}

fn frame(cmd: u8, payload: &[u8]) -> Vec<Packet> {
    let cid = CHANNEL.with(Cell::get);
    let mut packets = Vec::new();
    let mut packet = [0u8; PACKET_SIZE];
    packet[..4].copy_from_slice(&cid.to_be_bytes());
    packet[4] = cmd;
    packet[5..7].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    let first = payload.len().min(PACKET_SIZE - 7);
    packet[7..7 + first].copy_from_slice(&payload[..first]);
    packets.push(packet);
    for (seq, chunk) in payload[first..].chunks(PACKET_SIZE - 5).enumerate() {
        let mut packet = [0u8; PACKET_SIZE];
        packet[..4].copy_from_slice(&cid.to_be_bytes());
        packet[4] = seq as u8;
        packet[5..5 + chunk.len()].copy_from_slice(chunk);
        packets.push(packet);
    }
    packets
}

/// Feed the packets and poll until the device has answered; returns the IN packets.
fn exchange(ctaphid: &mut Ctaphid, key: &mut Key<'_>, packets: &[Packet]) -> Vec<Packet> {
    let mut out = Vec::with_capacity(160);
    feed(ctaphid, key, packets, &mut out);
    out
}

/// `exchange` into room made before: the test itself allocates nothing while it runs.
fn feed(ctaphid: &mut Ctaphid, key: &mut Key<'_>, packets: &[Packet], out: &mut Vec<Packet>) {
    for packet in packets {
        ctaphid.handle_packet(packet, 0, key);
    }
    for _ in 0..10 {
        while let Some(packet) = ctaphid.pop_packet() {
            out.push(packet);
        }
        if !ctaphid.is_busy() {
            break;
        }
        ctaphid.poll(0, key);
    }
    assert!(out.len() < out.capacity(), "room for every answer packet");
}

/// One message from the IN packets: (command, payload).
fn reassemble(packets: &[Packet]) -> (u8, Vec<u8>) {
    let first = packets.first().expect("the key answered");
    assert_eq!(
        first[..4],
        CHANNEL.with(Cell::get).to_be_bytes(),
        "answered on our channel"
    );
    let len = usize::from(u16::from_be_bytes([first[5], first[6]]));
    let mut payload = first[7..].to_vec();
    for packet in &packets[1..] {
        payload.extend_from_slice(&packet[5..]);
    }
    payload.truncate(len);
    (first[4], payload)
}

/// INIT on the broadcast channel: the channel the key gives is the test host's from then on.
fn open(ctaphid: &mut Ctaphid, key: &mut Key<'_>) {
    CHANNEL.with(|c| c.set(0xFFFF_FFFF));
    let mut init = frame(0x86, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let (cmd, payload) = reassemble(&exchange(ctaphid, key, &init.split_off(0)));
    assert_eq!((cmd, &payload[..8]), (0x86, &[1, 2, 3, 4, 5, 6, 7, 8][..]));
    CHANNEL.with(|c| c.set(u32::from_be_bytes(payload[8..12].try_into().unwrap())));
}

/// What the key answered a request while an allocation failed.
#[derive(Debug, PartialEq)]
enum Answer {
    Ok,
    /// CTAPHID ERR_OTHER, CTAP1_ERR_OTHER or U2F's 0x6A84.
    OutOfMemory,
}

fn classify(cmd: u8, request_cmd: u8, payload: &[u8], context: &str) -> Answer {
    match (cmd, request_cmd) {
        (ERROR, _) => {
            assert_eq!(payload, [ERR_OTHER], "{context}: CTAPHID error");
            Answer::OutOfMemory
        }
        (CBOR, CBOR) => match payload[0] {
            0 => Answer::Ok,
            0x7F => Answer::OutOfMemory,
            other => panic!("{context}: CTAP2 status {other:#04x} for a full heap"),
        },
        (MSG, MSG) => match &payload[payload.len() - 2..] {
            [0x90, 0x00] => Answer::Ok,
            [0x6A, 0x84] => Answer::OutOfMemory,
            other => panic!("{context}: U2F status {other:02x?} for a full heap"),
        },
        (PING, PING) => Answer::Ok,
        other => panic!("{context}: unexpected answer {other:02x?}"),
    }
}

/// A transport for the PIN client and set-up steps: CBOR over CTAPHID, heap healthy.
struct Host<'k, 'a> {
    ctaphid: &'k mut Ctaphid,
    key: &'k mut Key<'a>,
}

impl Transport for Host<'_, '_> {
    fn ctap2_raw(&mut self, request: &[u8]) -> (u8, Vec<u8>) {
        let answer = exchange(self.ctaphid, self.key, &(frame(CBOR, request)));
        let (cmd, payload) = reassemble(&answer);
        assert_eq!(cmd, CBOR);
        (payload[0], payload[1..].to_vec())
    }
}

// ---------------------------------------------------------------------------------------------
// The scenarios

const PIN: &str = "1234";

/// A request made on a key after `setup`; `check` looks at the key afterwards, heap healthy.
struct Scenario {
    name: &'static str,
    setup: fn(&mut Host<'_, '_>) -> (u8, Vec<u8>),
    check: fn(&mut Host<'_, '_>, &Answer),
}

/// Fail each allocation of the scenario's request in turn.
fn run(scenario: &Scenario) -> usize {
    let mut failures = 0;
    for n in 1.. {
        let mut storage = RamStorage::default();
        let knobs = Knobs::default();
        let reached = with_key(&mut storage, &knobs, 7, |key| {
            let mut ctaphid = Ctaphid::new(DeviceVersion {
                major: 1,
                minor: 0,
                build: 0,
            });
            open(&mut ctaphid, key);
            let mut host = Host {
                ctaphid: &mut ctaphid,
                key,
            };
            let (cmd, payload) = (scenario.setup)(&mut host);
            let packets = frame(cmd, &payload);
            let mut answer = Vec::with_capacity(160);
            let ((), reached) = failing_at(n, || {
                feed(host.ctaphid, host.key, &packets, &mut answer);
            });
            let (answer_cmd, answer_payload) = reassemble(&answer);
            let context = format!("{}, allocation {n} failed", scenario.name);
            let answer = classify(answer_cmd, cmd, &answer_payload, &context);
            if reached {
                assert_eq!(
                    answer,
                    Answer::OutOfMemory,
                    "{}: allocation {n} failed, yet the request succeeded",
                    scenario.name
                );
            }
            (scenario.check)(&mut host, &answer);
            reached
        });
        if !reached {
            break;
        }
        failures += 1;
    }
    failures
}

fn make_request(rk: bool) -> Vec<u8> {
    let mut body = make_credential_request("example.com", &[9; 32], &[-7], rk);
    if let Value::Map(entries) = &mut body {
        entries.push((
            int(6),
            map(vec![
                (text("hmac-secret"), Value::Bool(true)),
                (text("credBlob"), bytes(&[5; 32])),
                (text("credProtect"), int(1)),
            ]),
        ));
    }
    request(0x01, Some(&body))
}

fn make(host: &mut Host<'_, '_>, rk: bool) -> Vec<u8> {
    let (status, body) = host.ctap2_raw(&make_request(rk));
    assert_eq!(status, 0);
    let body = decode_body(&body).unwrap();
    parse_auth_data(get(&body, 2).unwrap().as_bytes().unwrap()).credential_id
}

fn discoverable_count(host: &mut Host<'_, '_>) -> i64 {
    let (status, body) = host.ctap2_raw(&[0x04]);
    assert_eq!(status, 0);
    get(&decode_body(&body).unwrap(), 0x14).map_or(-1, as_int)
}

fn still_works(host: &mut Host<'_, '_>) {
    make(host, false);
    let (status, _) = host.ctap2_raw(&request(
        0x02,
        Some(&get_assertion_request("example.com", &[1; 32], &[])),
    ));
    assert!(
        status == 0 || status == 0x2E,
        "getAssertion after: {status:#x}"
    );
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "getInfo",
            setup: |_| (CBOR, vec![0x04]),
            check: |host, _| still_works(host),
        },
        Scenario {
            name: "makeCredential (rk, hmac-secret, credBlob, credProtect)",
            setup: |host| {
                let before = discoverable_count(host);
                BEFORE.with(|b| b.set(before));
                (CBOR, make_request(true))
            },
            check: |host, answer| {
                let now = discoverable_count(host);
                let before = BEFORE.with(Cell::get);
                let expected = if *answer == Answer::Ok {
                    before - 1
                } else {
                    before
                };
                assert_eq!(now, expected, "a failed makeCredential stored nothing");
                still_works(host);
            },
        },
        Scenario {
            name: "makeCredential (non-discoverable)",
            setup: |_| (CBOR, make_request(false)),
            check: |host, _| still_works(host),
        },
        Scenario {
            name: "getAssertion, allow list",
            setup: |host| {
                let id = make(host, false);
                let body = get_assertion_request("example.com", &[1; 32], &[&id]);
                (CBOR, request(0x02, Some(&body)))
            },
            check: |host, _| still_works(host),
        },
        Scenario {
            name: "getAssertion, discovery with hmac-secret",
            setup: |host| {
                make(host, true);
                make(host, true);
                let client = PinClient::new(host, 2, 3);
                let mut body = get_assertion_request("example.com", &[1; 32], &[]);
                if let Value::Map(entries) = &mut body {
                    entries.push((
                        int(4),
                        map(vec![(
                            text("hmac-secret"),
                            client.hmac_secret_input(&[6; 64]),
                        )]),
                    ));
                }
                (CBOR, request(0x02, Some(&body)))
            },
            check: |host, _| still_works(host),
        },
        Scenario {
            name: "getNextAssertion",
            setup: |host| {
                make(host, true);
                let other = make_credential_request("example.com", &[8; 32], &[-7], true);
                assert_eq!(host.ctap2_raw(&request(0x01, Some(&other))).0, 0);
                let body = get_assertion_request("example.com", &[1; 32], &[]);
                assert_eq!(host.ctap2_raw(&request(0x02, Some(&body))).0, 0);
                (CBOR, vec![0x08])
            },
            check: |host, _| still_works(host),
        },
        Scenario {
            name: "clientPin setPIN",
            setup: |host| {
                let client = PinClient::new(host, 2, 4);
                let body = client.set_pin_request(PIN);
                (CBOR, request(0x06, Some(&body)))
            },
            check: |host, answer| {
                let client = PinClient::new(host, 2, 5);
                let token = client.token(host, PIN, Some(0x04), None);
                assert_eq!(token.is_ok(), *answer == Answer::Ok, "PIN set iff success");
            },
        },
        Scenario {
            name: "clientPin getPinUvAuthToken (a PIN check: no retry may be lost)",
            setup: |host| {
                let client = PinClient::new(host, 2, 6);
                assert_eq!(client.set_pin(host, PIN), 0);
                let body = map(vec![
                    (int(1), int(2)),
                    (int(2), int(9)),
                    (int(3), client.platform_key()),
                    (int(6), bytes(&client.pin_hash_enc(PIN))),
                    (int(9), int(0x04)),
                ]);
                (CBOR, request(0x06, Some(&body)))
            },
            check: |host, _| {
                assert_eq!(test_support::pin_client::retries(host).0, 8, "retries kept");
                let client = PinClient::new(host, 2, 7);
                assert!(client.token(host, PIN, Some(0x04), None).is_ok());
            },
        },
        Scenario {
            name: "credentialManagement enumerateCredentialsBegin",
            setup: |host| {
                make(host, true);
                let client = PinClient::new(host, 2, 8);
                assert_eq!(client.set_pin(host, PIN), 0);
                let token = client.token(host, PIN, Some(0x04), None).unwrap();
                let rp_hash: [u8; 32] = Sha256::digest(b"example.com").into();
                let params = map(vec![(int(1), bytes(&rp_hash))]);
                let mut message = vec![4u8];
                ciborium::into_writer(&params, &mut message).unwrap();
                let body = map(vec![
                    (int(1), int(4)),
                    (int(2), params),
                    (int(3), int(2)),
                    (int(4), bytes(&PinClient::mac(2, &token, &message))),
                ]);
                (CBOR, request(0x0A, Some(&body)))
            },
            check: |host, _| still_works(host),
        },
        Scenario {
            name: "largeBlobs get",
            setup: |_| {
                let body = map(vec![(int(1), int(100)), (int(3), int(0))]);
                (CBOR, request(0x0C, Some(&body)))
            },
            check: |host, _| still_works(host),
        },
        Scenario {
            name: "U2F register (self-signed certificate)",
            setup: |_| {
                let mut apdu = vec![0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 64];
                apdu.extend_from_slice(&[3; 64]);
                apdu.extend_from_slice(&[0, 0]);
                (MSG, apdu)
            },
            check: |host, _| still_works(host),
        },
        Scenario {
            name: "PING of 1,000 bytes (a message reassembled from packets)",
            setup: |_| (PING, vec![0x5A; 1000]),
            check: |host, _| still_works(host),
        },
    ]
}

thread_local! {
    static BEFORE: Cell<i64> = const { Cell::new(0) };
}

#[test]
fn every_allocation_of_every_request_can_fail_and_the_key_answers_and_goes_on() {
    for scenario in scenarios() {
        let failures = run(&scenario);
        println!(
            "{}: {failures} allocations, each failed in turn",
            scenario.name
        );
    }
}

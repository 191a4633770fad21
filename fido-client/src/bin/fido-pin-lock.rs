//! Turn a key's PIN lock on or off from Linux (docs/pin-lock.md): authenticatorConfig
//! vendorPrototype with a pinUvAuthToken (acfg) for the key's PIN, read from standard input.
//!
//! ```text
//! fido-pin-lock /dev/hidrawN on|off          # a Pico, or the virtual key after usbip attach
//! fido-pin-lock 127.0.0.1:3240:1-1 on|off    # the virtual key over USB/IP, no attach needed
//! ```
//!
//! The PIN is asked for on standard error and read as one line from standard input (pipe it
//! from a password manager, or type it; `stty -echo` hides it on a terminal).

use std::io::BufRead;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

use fido_client::ctap::{bytes, call, int, map, Transport};
use fido_client::ctaphid::{Channel, Reports};
use fido_client::pin::PinClient;

const VENDOR_PROTOTYPE: i64 = 0xFF;
const LOCK_ON: i64 = 0x4C4F_434B;
const LOCK_OFF: i64 = 0x4F50_454E;
const ACFG: u8 = 0x20;

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("fido-pin-lock: {message}");
    std::process::exit(1)
}

fn switch(key: &mut impl Transport, pin: &str, id: i64) -> u8 {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).unwrap_or_else(|e| fail(format!("no randomness: {e}")));
    let client = PinClient::with_secret(key, 2, secret);
    let token = match client.token(key, pin, Some(ACFG), None) {
        Ok(token) => token,
        Err(0x31) => fail("wrong PIN (it cost a retry)"),
        Err(0x35) => fail("the key has no PIN: set one first (the lock needs it to seal)"),
        Err(status) => fail(format!("the PIN was refused: CTAP status 0x{status:02x}")),
    };
    let params = map(vec![(int(1), int(id))]);
    let mut message = vec![0xff; 32];
    message.extend_from_slice(&[0x0d, VENDOR_PROTOTYPE as u8]);
    ciborium::into_writer(&params, &mut message).expect("CBOR");
    let request = map(vec![
        (int(1), int(VENDOR_PROTOTYPE)),
        (int(2), params),
        (int(3), int(2)),
        (int(4), bytes(&PinClient::mac(2, &token, &message))),
    ]);
    call(key, 0x0D, Some(request)).0
}

fn run<D: Reports>(device: D, pin: &str, id: i64) -> u8 {
    let mut channel = Channel::open(device).unwrap_or_else(|e| fail(format!("CTAPHID: {e}")));
    switch(&mut channel, pin, id)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: fido-pin-lock /dev/hidrawN|HOST:PORT:BUSID on|off (the PIN on standard input)";
    let (Some(target), Some(what)) = (args.first(), args.get(1)) else {
        fail(usage)
    };
    let id = match what.as_str() {
        "on" => LOCK_ON,
        "off" => LOCK_OFF,
        _ => fail(usage),
    };
    eprint!("PIN: ");
    let mut pin = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut pin)
        .unwrap_or_else(|e| fail(e));
    let pin = pin.trim_end_matches(['\r', '\n']);
    let status = if target.starts_with('/') {
        let device = fido_client::hidraw::Hidraw::open(Path::new(target))
            .unwrap_or_else(|e| fail(format!("{target}: {e}")));
        run(device, pin, id)
    } else {
        let (server, bus_id) = target.rsplit_once(':').unwrap_or_else(|| fail(usage));
        let addr = server
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| fail(usage));
        let device =
            fido_client::usbip::Device::import_when_free(addr, bus_id, Duration::from_secs(2))
                .unwrap_or_else(|e| fail(format!("USB/IP {target}: {e}")));
        run(device, pin, id)
    };
    match status {
        0 => eprintln!("the PIN lock is {what}: it takes effect at the next power-up"),
        0x02 => fail("the key has no PIN lock (an older firmware?)"),
        status => fail(format!("refused: CTAP status 0x{status:02x}")),
    }
}

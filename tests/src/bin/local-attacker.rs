//! Another user on the same machine, trying what a local attacker would against a virtual key:
//! read its state, talk to its control socket, list and import it over USB/IP. The tests in
//! `tests/tests/e2e/local_users.rs` run it under a second uid (setpriv) and expect each attempt to
//! fail, and run it as the key's owner (or against a key opened to every user) to show that it
//! would succeed where it is allowed.
//!
//! ```text
//! local-attacker read PATH           read a file of the key's state
//! local-attacker control PATH LINE   send one control line, print the reply
//! local-attacker devlist ADDR        OP_REQ_DEVLIST
//! local-attacker import ADDR BUS     OP_REQ_IMPORT, enumerate, CTAPHID INIT, getInfo
//! ```
//!
//! Exit status 0: the attempt succeeded (it prints what it got); 1: it was refused (it prints
//! why); 2: wrong usage.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use e2e_tests::{ctaphid, usbip};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match args.as_slice() {
        ["read", path] => std::fs::read(path).map(|bytes| format!("read {} bytes", bytes.len())),
        ["control", path, line] => control(path, line),
        ["devlist", addr] => parse(addr).and_then(|addr| {
            usbip::list(addr).map(|devices| format!("listed {} devices", devices.len()))
        }),
        ["import", addr, bus] => parse(addr).and_then(|addr| import(addr, bus)),
        _ => {
            eprintln!("usage: local-attacker read PATH | control PATH LINE | devlist ADDR | import ADDR BUS");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(got) => {
            println!("succeeded: {got}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("refused: {error}");
            ExitCode::FAILURE
        }
    }
}

fn parse(addr: &str) -> std::io::Result<std::net::SocketAddr> {
    addr.parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))
}

/// A line the runner carries out is a success; `error refused` (or no reply) is not.
fn control(path: &str, line: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    // A runner that refuses may have answered and closed before the line is sent: read on.
    let sent = writeln!(stream, "{line}");
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    let reply = reply.trim_end().to_string();
    if reply.is_empty() || reply.starts_with("error refused") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("reply {reply:?} (sending: {sent:?})"),
        ));
    }
    Ok(format!("reply {reply:?}"))
}

/// What `usbip attach` and then a FIDO client do: import, enumerate, open a channel, getInfo.
fn import(addr: std::net::SocketAddr, bus: &str) -> std::io::Result<String> {
    let device = usbip::Device::import(addr, bus)?;
    let mut channel = ctaphid::Channel::open(device)?;
    let (status, body) = channel.cbor(&[0x04])?;
    Ok(format!(
        "getInfo status {status:#04x}, {} bytes",
        body.len()
    ))
}
